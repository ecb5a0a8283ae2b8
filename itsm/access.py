"""Access grants: the record, its state machine, and the rules a request must pass.

A grant is one person's time-bound access (login or sudo) to every host of an entitlement's
host group. It moves requested -> approved -> active -> expired | revoked, or is denied.
Nothing here reads the clock, the database or a host: callers pass `now` and the estate, so
the desk, the flows and the tests get the same answer for the same inputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from opsflow.errors import PermanentError
from opsflow.inventory.models import Audience, Entitlement, Estate, Person
from opsflow.inventory.types import SSHPublicKey, Username
from opsflow.itsm.records import UtcDatetime
from opsflow.itsm.states import StateMachine

AccessState = Literal["requested", "approved", "active", "expired", "revoked", "denied"]
Privilege = Literal["login", "sudo"]

GRANT_STATES: StateMachine[AccessState] = StateMachine(
    "access grant",
    {
        "requested": ("approved", "denied"),
        "approved": ("active", "expired", "revoked"),
        "active": ("expired", "revoked"),
        "expired": (),
        "revoked": (),
        "denied": (),
    },
)
"""The access grant state machine; approved -> expired/revoked covers a grant never activated."""

LIVE_STATES: tuple[AccessState, ...] = ("approved", "active")
"""States in which a grant explains accounts, keys and sudo rules found on its hosts."""

RESERVED_USERNAMES = frozenset(
    {"root", "daemon", "bin", "sys", "sync", "games", "man", "lp", "mail", "news", "uucp"}
    | {"proxy", "www-data", "backup", "list", "irc", "nobody", "sshd", "admin", "sudo"}
)
"""Names never granted: system accounts, whose keys would give far more than an entitlement."""

_USERNAME: TypeAdapter[str] = TypeAdapter(Username)

MARKER_PREFIX = "opsflow-grant-"
"""Keys and sudo rules opsflow installs carry `opsflow-grant-<id>`, so review can find them."""


def marker(grant_id: int) -> str:
    """The tag on everything a grant puts on a host: authorized_keys comment, sudoers file name."""
    return f"{MARKER_PREFIX}{grant_id}"


def key_body(public_key: str) -> str:
    """A key's type and base64 body: what identifies it, without its comment."""
    return " ".join(public_key.split()[:2])


def sudo_rule_text(grant_id: int, username: str, entitlement: str) -> str:
    """The sudoers file a sudo grant installs: the user may run anything as anyone, no password."""
    return (
        f"# {marker(grant_id)}: sudo for {username} through entitlement {entitlement}.\n"
        "# Managed by opsflow: removed when the grant ends. Do not edit.\n"
        f"{username} ALL=(ALL:ALL) NOPASSWD: ALL\n"
    )


class AccessError(PermanentError):
    """Base for refused access requests and decisions."""


class AccessRequestInvalidError(AccessError, ValueError):
    """The request does not fit the entitlement (duration, username, key); names the field."""

    def __init__(self, field: str, cause: str):
        self.field = field
        super().__init__(f"{field}: {cause}")


class AccessNotEntitledError(AccessError, PermissionError):
    """The requester may not ask for this entitlement, or may not act on this grant."""


class AccessRequestCreate(BaseModel):
    """What a person sends to ask for access; the requester is who sends it.

    Unknown fields are refused rather than ignored: a misspelt `duration_minutes` must not
    silently become the entitlement's longest duration.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    entitlement: str = Field(min_length=1, max_length=63, description="Entitlement name.")
    duration_minutes: float | None = Field(
        default=None,
        gt=0,
        description="How long the access lasts from when it is in place; default the "
        "entitlement's longest.",
    )
    username: Username | None = Field(
        default=None, description="Account name on the hosts; default the requester's name."
    )
    ssh_public_key: SSHPublicKey | None = Field(
        default=None, description="Key to log in with; default the requester's in people.yaml."
    )
    reason: str = Field(default="", max_length=1000)


class AccessDecision(BaseModel):
    """An approver's comment on approving or rejecting a request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    comment: str = Field(default="", max_length=1000)


class AccessGrant(BaseModel):
    """One person's time-bound access to the hosts of an entitlement, and its history."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: int
    entitlement: str
    privilege: Privilege
    host_group: str
    requester: str
    username: Username
    ssh_public_key: SSHPublicKey
    duration_minutes: float = Field(gt=0)
    reason: str = ""
    state: AccessState = "requested"
    requested_at: UtcDatetime
    approver: str | None = Field(default=None, description="Who approved or denied it.")
    decided_at: UtcDatetime | None = None
    decision_comment: str | None = None
    hosts: list[str] = Field(
        default_factory=list, description="The hosts the access was put on (set on activation)."
    )
    starts_at: UtcDatetime | None = None
    ends_at: UtcDatetime | None = Field(default=None, description="Expiry, set on activation.")
    revoke_requested_at: UtcDatetime | None = None
    revoke_requested_by: str | None = None
    ended_at: UtcDatetime | None = Field(default=None, description="When it was expired/revoked.")
    last_error: str | None = Field(default=None, description="Why the last grant/revoke failed.")
    flow_run_ids: list[str] = Field(default_factory=list)
    version: int = Field(default=1, ge=1)

    @property
    def marker(self) -> str:
        """The tag the grant's key line and sudoers file carry on hosts."""
        return marker(self.id)

    @property
    def is_live(self) -> bool:
        """Whether the grant explains access on its hosts (approved or active)."""
        return self.state in LIVE_STATES

    @property
    def pending_change(self) -> Literal["grant", "revoke"] | None:
        """The change on hosts the grant waits for: put in place once approved, taken away
        once a revocation is asked for; None when none, or when the last attempt failed
        (a failed grant waits for a person, a failed revocation for `expire-access`)."""
        if self.last_error is not None or not self.is_live:
            return None
        if self.revoke_requested_at is not None:
            return "revoke"
        return "grant" if self.state == "approved" else None

    def due_end(self) -> datetime:
        """When the access must be gone: its end once active, else approval plus duration."""
        if self.ends_at is not None:
            return self.ends_at
        start = self.decided_at or self.requested_at
        return start + timedelta(minutes=self.duration_minutes)


class ResolvedRequest(BaseModel):
    """A request checked against the estate, with every default filled in."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    entitlement: Entitlement
    username: Username
    ssh_public_key: SSHPublicKey
    duration_minutes: float
    reason: str


def resolve_request(
    estate: Estate, requester: Person, body: AccessRequestCreate
) -> ResolvedRequest:
    """Check a request against the entitlement and fill defaults, or refuse naming why.

    Raises:
        AccessNotEntitledError: the entitlement does not exist for them or does not admit them.
        AccessRequestInvalidError: duration over the longest, no key, or a reserved username.
    """
    try:
        entitlement = estate.entitlement(body.entitlement)
    except KeyError:
        known = ", ".join(e.name for e in estate.entitlements) or "none"
        raise AccessRequestInvalidError(
            "entitlement", f"no entitlement {body.entitlement!r} (known: {known})"
        ) from None
    if not entitlement.requesters.admits(requester):
        raise AccessNotEntitledError(
            f"{requester.name} may not request {entitlement.name}: "
            f"its requesters are {describe_audience(entitlement.requesters)}"
        )
    longest = entitlement.max_duration_hours * 60
    duration = body.duration_minutes if body.duration_minutes is not None else longest
    if duration > longest:
        raise AccessRequestInvalidError(
            "duration_minutes",
            f"{duration:g} minutes is longer than {entitlement.name} allows "
            f"({entitlement.max_duration_hours:g} h = {longest:g} minutes)",
        )
    username = body.username or requester.name
    if body.username is None:
        # A person's name is a Name, which allows characters an account name may not hold.
        try:
            username = _USERNAME.validate_python(username)
        except ValidationError:
            raise AccessRequestInvalidError(
                "username", f"{requester.name!r} is not a valid account name: give one"
            ) from None
    if username in RESERVED_USERNAMES:
        raise AccessRequestInvalidError("username", f"{username!r} is a reserved system account")
    other = estate.person(username)
    if other is not None and other.name != requester.name:
        raise AccessRequestInvalidError("username", f"{username!r} is {other.name}'s name")
    key = body.ssh_public_key or requester.ssh_public_key
    if key is None:
        raise AccessRequestInvalidError(
            "ssh_public_key", f"{requester.name} has no ssh_public_key in people.yaml: give one"
        )
    return ResolvedRequest(
        entitlement=entitlement,
        username=username,
        ssh_public_key=key,
        duration_minutes=duration,
        reason=body.reason,
    )


def describe_audience(audience: Audience) -> str:
    """Who an audience lets in, in words: "role approver, team ops"."""
    parts = (
        [f"role {r}" for r in audience.roles]
        + [f"team {t}" for t in audience.teams]
        + [f"person {p}" for p in audience.people]
    )
    return ", ".join(parts) or "nobody"


# --- what a live grant explains on a host ------------------------------------------------------
# Review and revocation ask the same questions: a marker a user can write is not enough, the
# grant must be live, cover the host, and have put exactly that key or rule there.


def grant_covers(grant: AccessGrant, host: str, groups: Mapping[str, Sequence[str]]) -> bool:
    """Whether the grant's access is on `host`: the hosts recorded at activation, else its
    group's hosts in the estate (`groups`, group name to host names)."""
    return host in (grant.hosts or groups.get(grant.host_group, []))


def explains_key(grant: AccessGrant, username: str, grant_id: int, key: str) -> bool:
    """Whether a key line marked `grant_id` holding `key` (type and body) in `username`'s
    authorized_keys is exactly the line this live grant installed (host coverage apart)."""
    return (
        grant.is_live
        and grant.id == grant_id
        and grant.username == username
        and key_body(grant.ssh_public_key) == key
    )


def explains_sudo_rule(grant: AccessGrant, name: str, content: str) -> bool:
    """Whether the sudoers file `name` holding `content` is exactly the rule this live sudo
    grant installed (host coverage apart)."""
    return (
        grant.is_live
        and grant.privilege == "sudo"
        and name == marker(grant.id)
        and content == sudo_rule_text(grant.id, grant.username, grant.entitlement)
    )
