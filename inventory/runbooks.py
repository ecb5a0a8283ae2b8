"""Runbooks declared in the estate (runbooks.yaml): diagnose, remediate and verify steps.

A step is a command (an argument vector over placeholders, never a shell string), an HTTP
call (method, a URL built from the inventory, a JSON body, credentials from a block, the
statuses it expects) or a run of any Prefect deployment. Placeholders name the host and
service the runbook acts on and the runbook's typed parameters (`inventory.templates`);
every step has its timeout and says whether it changes the host. Diagnose and verify steps
may not change anything; a remediate step may name the steps that undo it on rollback.
"""

from __future__ import annotations

import os
import re
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from opsflow.inventory.strict import StrictModel
from opsflow.inventory.templates import check_url_template, placeholders, unknown_placeholder
from opsflow.inventory.types import Name

SHIPPED_RUNBOOKS = frozenset({"restart-service", "free-disk-space", "recover-hung-service"})
"""The runbooks opsflow ships as code (`flows/runbooks`); a declared one may not take a name."""

ParameterName = Annotated[
    str,
    Field(pattern=r"^[a-z_][a-z0-9_]{0,62}$", description="lower-case letters, digits and '_'"),
]
DeploymentName = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_. -]{0,99}/[A-Za-z0-9][A-Za-z0-9_. -]{0,99}$",
        description="FLOW-NAME/DEPLOYMENT-NAME, as `prefect deployment ls` shows it",
    ),
]
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE"})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_INTEGER = re.compile(r"^[+-]?\d{1,18}$")
Phase = Literal["diagnose", "remediate", "verify", "rollback"]


class RunbookParameter(StrictModel):
    """A typed value a runbook's steps use as `{params.NAME}`; checked before any step runs."""

    name: ParameterName
    type: Literal["string", "integer", "path", "choice"] = "string"
    description: str = ""
    default: str | int | None = Field(
        default=None, description="Used when no value is given (restoration passes none)."
    )
    pattern: str | None = Field(default=None, description="string: a full-match regex.")
    max_length: int = Field(default=200, ge=1, le=4096)
    choices: list[str] = Field(default_factory=list, description="choice: the values allowed.")
    minimum: int | None = None
    maximum: int | None = None
    under: str | None = Field(
        default=None,
        pattern=r"^/[A-Za-z0-9/_.-]*$",
        description="path: the directory the path must lie in.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> RunbookParameter:
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"pattern: not a regular expression: {exc}") from None
        if self.type == "choice" and not self.choices:
            raise ValueError("choices: a choice parameter needs at least one choice")
        if self.default is not None:
            try:
                self.check(self.default)
            except ValueError as exc:
                raise ValueError(f"default: {exc}") from None
        return self

    def check(self, value: Any) -> str:
        """The value as it reaches the steps (text), or ValueError saying why it is refused."""
        if self.type == "integer":
            if isinstance(value, bool) or not isinstance(value, int | str):
                raise ValueError(f"expected an integer, got {type(value).__name__}")
            if isinstance(value, str) and not _INTEGER.match(value):
                raise ValueError(f"{value!r} is not an integer")
            number = int(value)
            if self.minimum is not None and number < self.minimum:
                raise ValueError(f"{number} is below the minimum {self.minimum}")
            if self.maximum is not None and number > self.maximum:
                raise ValueError(f"{number} is above the maximum {self.maximum}")
            return str(number)
        if not isinstance(value, str):
            raise ValueError(f"expected text, got {type(value).__name__}")
        if len(value) > self.max_length:
            raise ValueError(f"longer than {self.max_length} characters")
        if _CONTROL.search(value):
            raise ValueError("holds a control character")
        if self.type == "choice" and value not in self.choices:
            raise ValueError(f"{value!r} is not one of {', '.join(self.choices)}")
        if self.type == "path":
            if not value.startswith("/") or os.path.normpath(value) != value:
                raise ValueError(f"{value!r} is not an absolute, normalised path (no '..')")
            if self.under and not value.startswith(self.under.rstrip("/") + "/"):
                raise ValueError(f"{value!r} is not under {self.under}")
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            raise ValueError(f"{value!r} does not match the pattern {self.pattern}")
        return value


JsonValue = dict[str, Any] | list[Any] | str | int | float | bool | None


class HttpCall(StrictModel):
    """An HTTP request to an API: a service's admin API, a load balancer, a cloud API."""

    method: Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
    url: str = Field(
        description="http(s) URL; its host and port fixed or from the inventory "
        "({host.address}, {host.name}, {service.port}), placeholders in path and query "
        "percent-encoded."
    )
    body: JsonValue = Field(default=None, description="Sent as JSON; placeholders in strings.")
    credentials: Name | None = Field(
        default=None, description="Name of an opsflow HTTP credentials block."
    )
    expect_status: list[Annotated[int, Field(ge=100, le=599)]] = Field(
        default_factory=lambda: [200], description="The statuses that mean success."
    )
    idempotent: bool | None = Field(
        default=None,
        description="Whether sending it twice is safe; default: GET, HEAD, PUT and DELETE are.",
    )
    retries: int | None = Field(
        default=None,
        ge=0,
        le=5,
        description="Retries on a transient failure (idempotent calls only; default 2).",
    )
    verify_tls: bool = True

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_url_template(value)

    @field_validator("expect_status", mode="before")
    @classmethod
    def _one_status(cls, value: Any) -> Any:
        return [value] if isinstance(value, int) else value

    @model_validator(mode="after")
    def _retried_only_when_safe(self) -> HttpCall:
        if self.retries and not self.is_idempotent:
            raise ValueError(
                f"retries: a {self.method} is not idempotent, so it is never retried "
                "(set idempotent: true if sending it twice is safe)"
            )
        return self

    @property
    def is_idempotent(self) -> bool:
        """Whether the call may be sent again after a transient failure."""
        return self.idempotent if self.idempotent is not None else self.method in IDEMPOTENT_METHODS

    @property
    def retry_count(self) -> int:
        """How many times a transient failure is retried."""
        if not self.is_idempotent:
            return 0
        return 2 if self.retries is None else self.retries


class DeploymentCall(StrictModel):
    """A run of a Prefect deployment, waited for until it ends or the step's timeout."""

    name: DeploymentName
    parameters: dict[str, Any] = Field(
        default_factory=dict, description="The run's parameters; placeholders in strings."
    )


class StepAction(StrictModel):
    """What one step does: exactly one of a command, an HTTP call or a deployment run."""

    name: Name
    description: str = ""
    command: list[Annotated[str, Field(min_length=1)]] | None = Field(
        default=None, min_length=1, description="An argument vector, run over SSH on the host."
    )
    http: HttpCall | None = None
    deployment: DeploymentCall | None = None
    timeout_s: float | None = Field(
        default=None, gt=0, le=3600, description="Default: 60 (command, http), 600 (deployment)."
    )
    expect_exit: list[int] | None = Field(
        default=None, description="command: the exit statuses that mean success (default [0])."
    )

    @field_validator("command")
    @classmethod
    def _placeholders_close(cls, value: list[str] | None) -> list[str] | None:
        for argument in value or []:
            placeholders(argument)
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> StepAction:
        kinds = [k for k in ("command", "http", "deployment") if getattr(self, k) is not None]
        if len(kinds) != 1:
            found = ", ".join(kinds) or "none"
            raise ValueError(f"a step is exactly one of command, http, deployment (found: {found})")
        if self.expect_exit is not None and self.command is None:
            raise ValueError("expect_exit: only a command has an exit status")
        return self

    @property
    def kind(self) -> Literal["command", "http", "deployment"]:
        """Which of the three the step is."""
        if self.command is not None:
            return "command"
        return "http" if self.http is not None else "deployment"

    @property
    def timeout(self) -> float:
        """The step's timeout in seconds."""
        if self.timeout_s is not None:
            return self.timeout_s
        return 600.0 if self.kind == "deployment" else 60.0

    def templates(self) -> list[tuple[str, str]]:
        """Every text with placeholders in the step, each with the field it is in."""
        found: list[tuple[str, str]] = []
        if self.command is not None:
            found += [(f"command[{i}]", arg) for i, arg in enumerate(self.command)]
        if self.http is not None:
            found.append(("http.url", self.http.url))
            found += _strings("http.body", self.http.body)
        if self.deployment is not None:
            found += _strings("deployment.parameters", self.deployment.parameters)
        return found


def _strings(where: str, value: Any) -> list[tuple[str, str]]:
    if isinstance(value, str):
        return [(where, value)]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in _strings(f"{where}.{k}", v)]
    if isinstance(value, list):
        return [s for i, v in enumerate(value) for s in _strings(f"{where}[{i}]", v)]
    return []


class RunbookStep(StepAction):
    """A step of a runbook; a remediate step may say how it is undone."""

    changes: bool | None = Field(
        default=None,
        description="Whether it changes the host (default: remediate steps do, others do not).",
    )
    rollback: list[StepAction] = Field(
        default_factory=list,
        description="remediate: steps that undo this one when verification fails.",
    )


class DeclaredRunbook(StrictModel):
    """A restoration procedure written in the estate, run like the shipped ones."""

    name: Name
    description: str = ""
    parameters: list[RunbookParameter] = Field(default_factory=list)
    diagnose: list[RunbookStep] = Field(default_factory=list)
    remediate: list[RunbookStep] = Field(min_length=1)
    verify: list[RunbookStep] = Field(
        default_factory=list,
        description="Checks polled after the service's health check passes, to the deadline.",
    )

    @model_validator(mode="after")
    def _steps_fit(self) -> DeclaredRunbook:
        problems = []
        names = [p.name for p in self.parameters]
        if len(names) != len(set(names)):
            problems.append("parameters: a parameter name is used twice")
        seen: set[str] = set()
        for phase, step, label in self.steps():
            if phase != "rollback":
                if step.name in seen:
                    problems.append(f"{label}: another step has the name {step.name!r}")
                seen.add(step.name)
            if isinstance(step, RunbookStep):
                if phase in ("diagnose", "verify") and step.changes:
                    problems.append(f"{label}: changes: a {phase} step must not change the host")
                if phase != "remediate" and step.rollback:
                    problems.append(f"{label}: rollback: only a remediate step is undone")
            for where, text in step.templates():
                try:
                    used = placeholders(text)
                except ValueError as exc:
                    problems.append(f"{label}: {where}: {exc}")
                    continue
                for name in used:
                    why = unknown_placeholder(name, set(names))
                    if why:
                        problems.append(f"{label}: {where}: {why}")
        if problems:
            raise ValueError("\n".join(problems))  # the loader reports one problem a line
        return self

    def steps(self) -> list[tuple[Phase, StepAction, str]]:
        """Every step with its phase and a label naming it (`remediate[1] (put-in-service)`)."""
        found: list[tuple[Phase, StepAction, str]] = []
        for phase in ("diagnose", "remediate", "verify"):
            for index, step in enumerate(getattr(self, phase)):
                label = f"{phase}[{index}] ({step.name})"
                found.append((phase, step, label))
                for undo_index, undo in enumerate(step.rollback):
                    found.append(
                        ("rollback", undo, f"{label} rollback[{undo_index}] ({undo.name})")
                    )
        return found

    def parameter(self, name: str) -> RunbookParameter | None:
        """The parameter called `name`, if the runbook declares it."""
        return next((p for p in self.parameters if p.name == name), None)

    def parameter_values(self, given: dict[str, Any]) -> dict[str, str]:
        """Every parameter's checked value: `given`, else its default.

        Raises:
            ValueError: naming `params.NAME` and why (unknown, missing or refused).
        """
        problems = [
            f"params.{name}: not a parameter of {self.name}"
            for name in given
            if self.parameter(name) is None
        ]
        values: dict[str, str] = {}
        for parameter in self.parameters:
            value = given.get(parameter.name, parameter.default)
            if value is None:
                problems.append(f"params.{parameter.name}: required, and no default")
                continue
            try:
                values[parameter.name] = parameter.check(value)
            except ValueError as exc:
                problems.append(f"params.{parameter.name}: {exc}")
        if problems:
            raise ValueError("; ".join(problems))
        return values
