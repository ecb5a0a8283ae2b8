"""The estate as typed models: hosts, services and their health checks and controls.

Models forbid unknown fields so a typo in the YAML is an error, not a silent default.

One module, over 400 lines, on purpose: it is the estate's schema, read top to bottom as the
YAML is written (hosts, services, people, rules, catalog, entitlements, settings, `Estate`
with its cross-checks). The constrained types are `inventory.types`; what is left are
declarations that reference each other and would only be scattered by a split.
"""

from __future__ import annotations

import hashlib
import shlex
from datetime import datetime
from functools import cached_property
from typing import Annotated, Literal

from pydantic import AliasChoices, AnyHttpUrl, ConfigDict, Field, model_validator

from opsflow.inventory.matchers import MatcherText
from opsflow.inventory.runbooks import SHIPPED_RUNBOOKS, DeclaredRunbook, DeploymentName
from opsflow.inventory.strict import StrictModel
from opsflow.inventory.types import (
    Address,
    LabelName,
    Labels,
    Name,
    Port,
    SSHPublicKey,
    Username,
)


class Host(StrictModel):
    """A machine opsflow reaches over SSH."""

    name: Name
    address: Address
    port: Port = 22
    user: Username = "root"
    credentials: Name = Field(
        default="opsflow-lab", description="Name of the SSH credentials block to log in with."
    )
    host_key: SSHPublicKey | None = Field(
        default=None,
        description="The host's pinned public key; else from the estate's known_hosts file.",
    )
    groups: list[Name] = Field(default_factory=list)
    labels: Labels = Field(default_factory=dict)


Argv = Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
"""A command as its argument vector; each argument is quoted when sent to a shell."""


def render_argv(argv: list[str]) -> str:
    """The shell-quoted command line for an argument vector."""
    return shlex.join(argv)


class HttpCheck(StrictModel):
    """Healthy when GET http://HOST_ADDRESS:PORT/PATH answers the expected status in time."""

    kind: Literal["http"] = "http"
    port: Port
    path: str = Field(default="/health", pattern=r"^/[A-Za-z0-9/_.-]*$")
    expect_status: int = Field(default=200, ge=100, le=599)
    timeout_s: float = Field(default=3.0, gt=0, le=60)


class CommandCheck(StrictModel):
    """Healthy when the command exits 0 on the host over SSH."""

    kind: Literal["command"] = "command"
    argv: Argv
    timeout_s: float = Field(default=10.0, gt=0, le=300)


HealthCheck = Annotated[HttpCheck | CommandCheck, Field(discriminator="kind")]


class ServiceControl(StrictModel):
    """The commands that start, stop and report a service on one of its hosts."""

    start: Argv
    stop: Argv
    status: Argv
    restart: Argv | None = None


class LogPolicy(StrictModel):
    """How a service's old logs may be cleaned when its log filesystem fills."""

    pattern: str = Field(
        default="*.log.*",
        pattern=r"^[A-Za-z0-9*?._-]+$",
        description="Rotated log files (a find -name glob); the live log never matches.",
    )
    delete_after_days: int = Field(default=7, ge=1)
    compress_after_days: int = Field(default=1, ge=0)
    max_used_percent: int = Field(default=80, ge=1, le=100, description="Healthy below this.")


class Service(StrictModel):
    """Something the estate runs on one or more hosts and users depend on."""

    name: Name
    description: str = ""
    hosts: list[Name] = Field(default_factory=list)
    group: Name | None = Field(default=None, description="Runs on every host of this group.")
    health_check: HealthCheck
    control: ServiceControl | None = None
    log_dir: str | None = Field(default=None, pattern=r"^/[A-Za-z0-9/_.-]*$")
    log_policy: LogPolicy = Field(default_factory=LogPolicy)
    owner_team: Name | None = None
    impact: int = Field(default=2, ge=1, le=3, description="1 high, 3 low: the business impact.")
    runbooks: dict[Name, Name] = Field(
        default_factory=dict, description="Restoration runbook per symptom."
    )

    @model_validator(mode="after")
    def _placed(self) -> Service:
        if not self.hosts and self.group is None:
            raise ValueError("a service needs 'hosts' or 'group'")
        return self


Role = Literal["requester", "approver", "operator", "admin", "monitor"]
"""monitor: a monitoring system that may send events and nothing else."""


def token_sha256(token: str) -> str:
    """The SHA-256 hex digest people.yaml keeps in place of a person's API token."""
    return hashlib.sha256(token.encode()).hexdigest()


class Person(StrictModel):
    """Someone who uses opsflow; the desk knows them by the hash of their API token."""

    name: Name
    full_name: str = ""
    email: str | None = Field(default=None, pattern=r"^[^@\s]+@[^@\s]+$")
    team: Name | None = None
    roles: list[Role] = Field(default_factory=lambda: list[Role](["requester"]))
    token_sha256: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="SHA-256 of the person's bearer token; the token itself is never stored.",
    )
    ssh_public_key: SSHPublicKey | None = Field(
        default=None, description="The key installed on hosts when the person is granted access."
    )
    notify_block: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9-]+/[a-z0-9][a-z0-9-]*$",
        description="Prefect notification block (type/name) that reaches this person.",
    )


class Team(StrictModel):
    """A team that owns services and is assigned incidents; `on_call` is paged on escalation."""

    name: Name
    on_call: Name | None = None
    notify_block: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9-]+/[a-z0-9][a-z0-9-]*$",
        description="Prefect notification block (type/name, e.g. custom-webhook/ops-pager) "
        "that reaches the team's on-call.",
    )


EventClassName = Literal["informational", "warning", "exception"]


class EventRule(StrictModel):
    """Classifies the events whose labels match; the first matching rule wins.

    `match` and `matchers` must all hold; a rule with neither matches every event.
    """

    name: Name
    match: dict[str, str] = Field(
        default_factory=dict, description="Labels that must be equal, all of them."
    )
    matchers: list[MatcherText] = Field(
        default_factory=list,
        description='Alertmanager matchers, all of which must hold: name="v", name!="v", '
        'name=~"regex", name!~"regex" (regexes anchored; an absent label is "").',
    )
    event_class: EventClassName = Field(alias="class")
    symptom: Name | None = Field(default=None, description="Default: the event's symptom label.")
    impact: int | None = Field(default=None, ge=1, le=3, description="Default: the service's.")
    urgency: int = Field(default=2, ge=1, le=3)
    runbook: Name | None = Field(default=None, description="Default: the service's runbook.")
    correlation_key: str = Field(
        default="{host}/{service}/{symptom}",
        description="Template over host, service, symptom and labels: events with one key "
        "go to one open incident.",
    )

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def matches(self, labels: dict[str, str]) -> bool:
        """Whether an event's labels satisfy every condition of the rule.

        Raises:
            MatchTimeoutError: one of its regular expressions ran too long on these labels.
        """
        return all(labels.get(name) == value for name, value in self.match.items()) and all(
            matcher.matches(labels) for matcher in self.matchers
        )


class LabelContract(StrictModel):
    """Which labels of an alert name its configuration item (estate.yaml `labels:`).

    Each list is tried in order and the first label present and non-empty wins. The host is
    the value of a `host` label, else the host part of an `instance` label (`host:port`,
    `[v6]:port`, a bare host or a URL) when it is an inventory host's name or address; an
    instance that matches no host names no host. The service is a `service` label's value.
    """

    host: list[LabelName] = Field(
        default_factory=lambda: ["host"],
        description="Labels whose value is the host's inventory name (or address).",
    )
    instance: list[LabelName] = Field(
        default_factory=lambda: ["instance"],
        description="Labels holding host:port, matched against the hosts' addresses and names.",
    )
    service: list[LabelName] = Field(
        default_factory=lambda: ["service", "job"],
        description="Labels whose value is the service's name.",
    )


class AlertmanagerLink(StrictModel):
    """The Alertmanager opsflow mirrors its maintenance windows to, as silences."""

    url: AnyHttpUrl = Field(description="Alertmanager's base URL, e.g. http://am.example:9093.")
    credentials: Name | None = Field(
        default=None,
        description="Name of an opsflow Alertmanager credentials block (basic auth or a bearer "
        "token), when Alertmanager or a proxy in front of it asks for one.",
    )
    timeout_s: float = Field(default=10.0, gt=0, le=120, description="Per request, each way.")


class MaintenanceWindow(StrictModel):
    """While it lasts, events on its hosts are recorded but open no incident."""

    name: Name
    hosts: list[Name] = Field(default_factory=list)
    group: Name | None = None
    start: datetime
    end: datetime
    reason: str = ""

    @model_validator(mode="after")
    def _ordered(self) -> MaintenanceWindow:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("start and end need a time zone, e.g. 2026-01-01T02:00:00Z")
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class Audience(StrictModel):
    """Who a policy lets in: anyone with one of the roles, in one of the teams, or named."""

    roles: list[Role] = Field(default_factory=list)
    teams: list[Name] = Field(default_factory=list)
    people: list[Name] = Field(default_factory=list)

    def admits(self, person: Person) -> bool:
        """Whether `person` belongs to this audience (admins always do)."""
        return (
            "admin" in person.roles
            or bool(set(self.roles) & set(person.roles))
            or (person.team is not None and person.team in self.teams)
            or person.name in self.people
        )


InputType = Literal["string", "integer", "choice", "service", "host", "host_group"]


class CatalogInput(StrictModel):
    """A typed input of a catalog item; service, host and host_group choose from the estate."""

    name: Name
    type: InputType
    description: str = ""
    required: bool = True
    choices: list[str] = Field(default_factory=list, description="For type choice.")
    pattern: str | None = Field(default=None, description="For type string: a full-match regex.")
    max_length: int = Field(default=200, ge=1, le=10_000)
    minimum: int | None = None
    maximum: int | None = None


class Approval(StrictModel):
    """none: a standard pre-approved request; one: one of `approvers`, never the requester."""

    policy: Literal["none", "one"] = "none"
    approvers: Audience = Field(default_factory=Audience)
    timeout_minutes: float = Field(default=60, gt=0)
    on_timeout: Literal["reject", "escalate"] = "reject"


class Fulfillment(StrictModel):
    """What fulfills the item: one of opsflow's fulfillment flows, a runbook of the estate's
    runbooks.yaml or any Prefect deployment; fixed parameters merged with the request's inputs.
    """

    flow: Name | None = Field(default=None, description="An opsflow fulfillment flow.")
    runbook: Name | None = Field(
        default=None,
        description="A runbook of runbooks.yaml, run on the request's host and service inputs.",
    )
    deployment: DeploymentName | None = Field(
        default=None, description="Any Prefect deployment, FLOW-NAME/DEPLOYMENT-NAME."
    )
    parameters: dict[str, str | int | bool] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_way(self) -> Fulfillment:
        ways = [w for w in ("flow", "runbook", "deployment") if getattr(self, w) is not None]
        if len(ways) != 1:
            found = ", ".join(ways) or "none"
            raise ValueError(f"name exactly one of flow, runbook, deployment (found: {found})")
        return self


class CatalogItem(StrictModel):
    """Something people may ask for, with its inputs, who may ask, approval and fulfillment."""

    name: Name
    description: str
    inputs: list[CatalogInput] = Field(default_factory=list)
    requesters: Audience = Field(default_factory=lambda: Audience(roles=["requester"]))
    approval: Approval = Field(default_factory=Approval)
    # The first spellings, "fulfilment" and "fulfil_within_minutes", are read still: an estate
    # written before opsflow settled on one spelling keeps loading.
    fulfillment: Fulfillment = Field(
        validation_alias=AliasChoices("fulfillment", "fulfilment"),
        description="Which flow fulfills it.",
    )
    fulfill_within_minutes: float = Field(
        default=30,
        gt=0,
        validation_alias=AliasChoices("fulfill_within_minutes", "fulfil_within_minutes"),
    )


class Entitlement(StrictModel):
    """Access that may be granted: login or sudo on every host of a group, for a bounded time."""

    name: Name
    description: str = ""
    group: Name = Field(description="The host group the access is to.")
    privilege: Literal["login", "sudo"]
    requesters: Audience
    approvers: Audience
    max_duration_hours: float = Field(gt=0, le=24 * 90)


class EstateSettings(StrictModel):
    """Estate-wide settings (estate.yaml)."""

    name: Name = "estate"
    known_hosts: str | None = Field(
        default=None, description="known_hosts file, relative to the estate directory."
    )
    ssh_concurrency: int = Field(default=20, ge=1, le=500)
    ui_approvals: bool = Field(
        default=False,
        description="Accept approvals given in the Prefect UI, which has no user identity in OSS.",
    )
    timezone: str = "UTC"
    remediation_budget: int = Field(
        default=3,
        ge=0,
        description="Automatic remediations per service per hour before escalating.",
    )
    default_team: Name = "ops"
    page_grouping_minutes: float = Field(
        default=5,
        ge=0,
        le=1440,
        description="After a failed ITIL run pages the default team's on-call, further "
        "failures within this many minutes are held and sent as one digest page when the "
        "window ends (0: every failure pages at once).",
    )
    problem_threshold: int = Field(
        default=3,
        ge=2,
        description="Incidents of one service and symptom within the window that open a problem.",
    )
    problem_window_days: int = Field(
        default=7, ge=1, description="How many days back the problem review looks."
    )
    retention_days: int = Field(
        default=90,
        ge=1,
        le=3650,
        description="Days triaged events and the audit of closed records are kept "
        "(the prune-records deployment deletes older ones; open incidents' are always kept).",
    )
    max_open_requests_per_person: int = Field(
        default=10,
        ge=1,
        description="Service requests one person may have open at once (429 beyond it).",
    )
    release_incident_window_minutes: float = Field(
        default=60,
        ge=0,
        le=10_080,
        description="An incident triage opens on a service within this many minutes of a "
        "release of it is linked to that release, as possibly caused by it (0: never).",
    )
    labels: LabelContract = Field(
        default_factory=LabelContract,
        description="Which alert labels name the host and the service an event is about.",
    )
    alertmanager: AlertmanagerLink | None = Field(
        default=None,
        description="Where maintenance windows are mirrored as silences; none: not mirrored.",
    )


class Estate(StrictModel):
    """Everything opsflow knows about the infrastructure it operates."""

    settings: EstateSettings = Field(default_factory=EstateSettings)
    hosts: list[Host]
    services: list[Service] = Field(default_factory=list)
    people: list[Person] = Field(default_factory=list)
    teams: list[Team] = Field(default_factory=list)
    rules: list[EventRule] = Field(default_factory=list)
    maintenance: list[MaintenanceWindow] = Field(default_factory=list)
    catalog: list[CatalogItem] = Field(default_factory=list)
    entitlements: list[Entitlement] = Field(default_factory=list)
    runbooks: list[DeclaredRunbook] = Field(default_factory=list)

    def declared_runbook(self, name: str) -> DeclaredRunbook | None:
        """The runbook of runbooks.yaml called `name`, if the estate declares one."""
        return next((r for r in self.runbooks if r.name == name), None)

    @cached_property
    def runbook_names(self) -> frozenset[str]:
        """Every runbook restoration can run here: the shipped ones and the declared ones."""
        return SHIPPED_RUNBOOKS | {r.name for r in self.runbooks}

    def person(self, name: str) -> Person | None:
        """The person called `name`, if the estate knows them."""
        return next((p for p in self.people if p.name == name), None)

    def catalog_item(self, name: str) -> CatalogItem:
        """The catalog item called `name`; KeyError naming it otherwise."""
        for item in self.catalog:
            if item.name == name:
                return item
        raise KeyError(f"no catalog item {name!r}")

    def entitlement(self, name: str) -> Entitlement:
        """The entitlement called `name`; KeyError naming it otherwise."""
        for entitlement in self.entitlements:
            if entitlement.name == name:
                return entitlement
        raise KeyError(f"no entitlement {name!r}")

    def host(self, name: str) -> Host:
        """The host called `name`; KeyError names it when it is not in the estate."""
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(f"no host {name!r} in the estate")

    def service(self, name: str) -> Service:
        """The service called `name`; KeyError names it when it is not in the estate."""
        for service in self.services:
            if service.name == name:
                return service
        raise KeyError(f"no service {name!r} in the estate")

    @cached_property
    def groups(self) -> dict[str, list[str]]:
        """Group name to the names of its hosts, as the hosts declare them.

        Made once per estate (it is frozen; read it, never change it): triage asks for it
        on every event it settles.
        """
        groups: dict[str, list[str]] = {}
        for host in self.hosts:
            for group in host.groups:
                groups.setdefault(group, []).append(host.name)
        return groups

    def person_with_token_hash(self, digest: str) -> Person | None:
        """The person whose token hashes to `digest`, if any."""
        for person in self.people:
            if person.token_sha256 == digest:
                return person
        return None

    def team(self, name: str) -> Team | None:
        """The team called `name`, if the estate defines it."""
        return next((t for t in self.teams if t.name == name), None)

    def service_on(self, service: str, host: str) -> tuple[Service, Host]:
        """The named service and host, where the service runs on that host; KeyError naming
        the field (`service:` or `host:`) and why otherwise."""
        try:
            target_service = self.service(service)
        except KeyError:
            raise KeyError(f"service: no service {service!r} in the estate") from None
        try:
            target_host = self.host(host)
        except KeyError:
            raise KeyError(f"host: no host {host!r} in the estate") from None
        names = [h.name for h in self.hosts_of(target_service)]
        if target_host.name not in names:
            raise KeyError(
                f"host: {host} does not run {service} (its hosts: {', '.join(names) or 'none'})"
            )
        return target_service, target_host

    def hosts_of(self, service: Service) -> list[Host]:
        """The hosts a service runs on, named directly or through its group."""
        names = list(service.hosts)
        if service.group:
            names += [n for n in self.groups.get(service.group, []) if n not in names]
        return [self.host(n) for n in names]
