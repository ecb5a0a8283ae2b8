"""Run one step of a declared runbook: a command over SSH, an HTTP call or a deployment run.

Values reach a step only through its placeholders (`inventory.templates`): one argument of
the argument vector, one percent-encoded component of the URL, one JSON string. A step that
changes nothing, or an HTTP call that is idempotent, is retried on transient failures; a
command that changes the host and a POST are tried once. Each has a timeout at the I/O
level (the command's on the host, the request's on the socket, the deployment's wait).
"""

from __future__ import annotations

import time
from typing import Any, Literal, cast

import requests
import urllib3
from prefect import task
from prefect.cache_policies import NONE
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from pydantic import Field

from opsflow.blocks.http import HttpCredentials
from opsflow.errors import OpsError, PermanentError, TransientError
from opsflow.inventory.models import Host, HttpCheck, Service
from opsflow.inventory.runbooks import StepAction
from opsflow.inventory.templates import render, render_url
from opsflow.tasks.change import Change
from opsflow.tasks.retry import RETRY_TRANSIENT
from opsflow.tasks.ssh import MASK, execute

OUTPUT_CHARS = 1000
"""How much of what a step printed or answered its result keeps (the end)."""

MAX_ANSWER_BYTES = 64 * 1024
"""How much of an HTTP answer is read (its start); the rest is never downloaded."""

TRANSIENT_STATUSES = frozenset({429, 502, 503, 504})
"""Statuses that may pass on their own: retried when the call is idempotent."""


class StepFailedError(PermanentError):
    """A step did not do what its runbook expects; the message names runbook and step."""


class StepTransientError(TransientError):
    """A step's call could not be made or was answered busy; it may pass if tried again."""


class StepResult(Change):
    """What one step did (made, when it changes the host) or read (unchanged)."""

    phase: str = Field(description="diagnose, remediate, verify or rollback.")
    ok: bool = Field(default=True, description="False: it failed, maybe part way (`detail`).")
    output: str = Field(default="", description=f"The last {OUTPUT_CHARS} characters it said.")


def step_values(
    host: Host, service: Service, reference: str, parameters: dict[str, str]
) -> dict[str, str]:
    """What a runbook's placeholders stand for on this host and service."""
    values = {
        "host": host.name,
        "host.name": host.name,
        "host.address": host.address,
        "service": service.name,
        "service.name": service.name,
        "reference": reference,
    }
    if service.log_dir:
        values["service.log_dir"] = service.log_dir
    if isinstance(service.health_check, HttpCheck):
        values["service.port"] = str(service.health_check.port)
    values.update({f"params.{name}": value for name, value in parameters.items()})
    return values


def _why_unknown(name: str, values: dict[str, str]) -> str:
    if name == "service.log_dir":
        return f"service {values['service']} has no log_dir"
    if name == "service.port":
        return f"service {values['service']}'s health check is not an http one"
    return "no such value here"


def _rendered(label: str, where: str, fill: Any, values: dict[str, str]) -> Any:
    try:
        return fill()
    except KeyError as exc:
        name = exc.args[0]
        raise StepFailedError(
            f"{label}: {where}: {{{name}}} has no value: {_why_unknown(name, values)}"
        ) from None


def _render_json(value: Any, values: dict[str, str]) -> Any:
    if isinstance(value, str):
        return render(value, values)
    if isinstance(value, dict):
        return {k: _render_json(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [_render_json(v, values) for v in value]
    return value


def _result(
    host: Host, action: str, label: str, phase: str, changes: bool, what: str, output: str
) -> StepResult:
    if changes:
        return StepResult.made(host.name, action, label, what, phase=phase, output=output)
    return StepResult.unchanged(
        host.name, action, label, f"read only: {what}", phase=phase, output=output
    )


@task(cache_policy=NONE, task_run_name="run_command_step[{label}@{host.name}]")
def run_command_step(
    label: str, step: StepAction, phase: str, changes: bool, host: Host, values: dict[str, str]
) -> StepResult:
    """Run the step's argument vector on the host and check its exit status."""
    argv = _rendered(
        label, "command", lambda: [render(arg, values) for arg in step.command or []], values
    )
    result = execute(host, argv, timeout_s=step.timeout, check=False)
    expected = step.expect_exit or [0]
    output = (result.stdout + result.stderr).strip()[-OUTPUT_CHARS:]
    if result.exit_status not in expected:
        raise StepFailedError(
            f"{label}: {result.command} exited {result.exit_status} on {host.name} "
            f"(expected {', '.join(map(str, expected))}): {output[-300:]}"
        )
    what = f"ran {result.command}: exit {result.exit_status}"
    return _result(host, "run_command_step", label, phase, changes, what, output)


def _credentials(label: str, name: str | None) -> HttpCredentials | None:
    if name is None:
        return None
    try:
        # Prefect types load() as the block or its coroutine; from sync code it is the block.
        return cast(HttpCredentials, HttpCredentials.load(name))
    except ValueError as exc:  # no such block, or not an HTTP credentials one
        raise StepFailedError(f"{label}: http.credentials: block {name!r}: {exc}") from None


@task(cache_policy=NONE, task_run_name="call_http_step[{label}@{host.name}]")
def call_http_step(
    label: str, step: StepAction, phase: str, changes: bool, host: Host, values: dict[str, str]
) -> StepResult:
    """Send the step's request with its block's credentials and check the answer's status."""
    call = step.http
    if call is None:
        raise StepFailedError(f"{label}: not an http step")
    url = _rendered(label, "http.url", lambda: render_url(call.url, values), values)
    body = _rendered(label, "http.body", lambda: _render_json(call.body, values), values)
    credentials = _credentials(label, call.credentials)
    secrets = credentials.secrets() if credentials else []
    session = credentials.get_client() if credentials else requests.Session()
    shown = f"{call.method} {url}"
    with session:
        try:
            response = session.request(
                call.method,
                url,
                json=body,
                timeout=(min(10.0, step.timeout), step.timeout),
                allow_redirects=False,
                verify=call.verify_tls,
                stream=True,  # read no more of the answer than the result keeps
            )
            with response:
                answer = response.raw.read(MAX_ANSWER_BYTES, decode_content=True)
        except requests.Timeout:
            raise StepTransientError(
                f"{label}: {shown}: no answer within {step.timeout:g}s"
            ) from None
        except (requests.ConnectionError, urllib3.exceptions.HTTPError):
            raise StepTransientError(f"{label}: {shown}: connection failed") from None
    output = answer.decode(response.encoding or "utf-8", errors="replace")[:OUTPUT_CHARS]
    for secret in secrets:
        output = output.replace(secret, MASK)
    if response.status_code not in call.expect_status:
        expected = ", ".join(map(str, call.expect_status))
        why = (
            f"{label}: {shown}: status {response.status_code} (expected {expected}): {output[:300]}"
        )
        if response.status_code in TRANSIENT_STATUSES:
            raise StepTransientError(why)
        raise StepFailedError(why)
    what = f"{shown}: {response.status_code}"
    return _result(host, "call_http_step", label, phase, changes, what, output)


@task(cache_policy=NONE, task_run_name="run_deployment_step[{label}@{host.name}]")
def run_deployment_step(
    label: str, step: StepAction, phase: str, changes: bool, host: Host, values: dict[str, str]
) -> StepResult:
    """Run the step's deployment with its parameters and wait until the run ends."""
    call = step.deployment
    if call is None:
        raise StepFailedError(f"{label}: not a deployment step")
    parameters = _rendered(
        label, "deployment.parameters", lambda: _render_json(call.parameters, values), values
    )
    try:
        # Prefect types run_deployment() as the run or its coroutine; from sync code it is the run.
        run = cast(
            FlowRun,
            run_deployment(call.name, parameters=parameters, timeout=step.timeout, as_subflow=True),
        )
    except ObjectNotFound:
        raise StepFailedError(f"{label}: deployment: no deployment {call.name!r}") from None
    state = run.state
    if state is None or not state.is_final():
        raise StepFailedError(
            f"{label}: deployment {call.name} run {run.name} did not end within "
            f"{step.timeout:g}s (it is {state.name if state else 'unknown'}; left running)"
        )
    if not state.is_completed():
        raise StepFailedError(
            f"{label}: deployment {call.name} run {run.name} ended {state.name}: {state.message}"
        )
    what = f"ran deployment {call.name}: run {run.name} {state.name}"
    return _result(host, "run_deployment_step", label, phase, changes, what, f"run {run.name}")


_RUNNERS = {
    "command": run_command_step,
    "http": call_http_step,
    "deployment": run_deployment_step,
}


def safe_to_repeat(step: StepAction, changes: bool) -> bool:
    """Whether a transient failure of the step may be retried: an HTTP call when it is
    idempotent, a command when it changes nothing; a deployment run never (it may have
    started)."""
    if step.http is not None:
        return step.http.retry_count > 0
    return step.command is not None and not changes


def perform_step(
    label: str,
    step: StepAction,
    phase: Literal["diagnose", "remediate", "verify", "rollback"],
    changes: bool,
    host: Host,
    values: dict[str, str],
    as_task: bool = True,
) -> StepResult:
    """Run the step as its task (retried when safe to repeat), or as a plain call where no
    task run fits (a rollback hook, a verification polled to its deadline)."""
    runner = _RUNNERS[step.kind]
    if not as_task:
        return runner.fn(label, step, phase, changes, host, values)
    retries: dict[str, Any] = {"retries": 0}
    if safe_to_repeat(step, changes):
        retries = {**RETRY_TRANSIENT}
        if step.http is not None:
            retries["retries"] = step.http.retry_count
    return runner.with_options(**retries)(label, step, phase, changes, host, values)


def poll_step(
    label: str, step: StepAction, host: Host, values: dict[str, str], deadline: float
) -> StepResult:
    """Run a read-only step until it succeeds; the last failure is raised at the deadline."""
    while True:
        try:
            return perform_step(label, step, "verify", False, host, values, as_task=False)
        except OpsError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.25)
