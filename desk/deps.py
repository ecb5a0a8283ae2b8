"""What the desk's routes depend on, defined once: who is asking, and the records and estate.

Who: bearer tokens to people and roles, from the estate's people.yaml (which holds only
hashes); role checks are dependencies (`require`), and which records a person may read is
`sees_everything` plus each resource's own rule (their own, or what they may approve). What:
the records the app was made with and each kind of record in them, the estate in use, and
the wake-ups to the workers. Every dependency is async (a sync one costs a hop through the
thread pool on every request) and quick: the estate is cached and its files looked at no
more than once a second, and each kind of record is an attribute of the records.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param

from opsflow.desk.estate import EstateCache, EstateUnavailableError
from opsflow.desk.runners.wake_ups import WakeUps
from opsflow.inventory.models import Estate, Person, token_sha256
from opsflow.itsm.access import AccessGrant
from opsflow.itsm.requests import ServiceRequest
from opsflow.itsm.store import records as store
from opsflow.itsm.store.access import AccessGrants
from opsflow.itsm.store.known_errors import KnownErrors as KnownErrorRecords
from opsflow.itsm.store.problems import Problems as ProblemRecords
from opsflow.itsm.store.requests import Requests as RequestRecords

RecordChange = Callable[[ServiceRequest | AccessGrant, str], None]
"""Told of a service request's or an access grant's change (the record after it, the change)."""

bearer = HTTPBearer(auto_error=False, description="A person's opsflow API token.")


async def current_person(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Person:
    """The person the request's bearer token belongs to; 401 when there is none or it is unknown.

    Async on purpose: it does no blocking I/O (the estate is cached), and a sync dependency
    costs a hop through the thread pool on every request.
    """
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "bearer token required", challenge)
    person = request.app.state.estate().person_with_token_hash(
        token_sha256(credentials.credentials)
    )
    if person is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "unknown token", challenge)
    return person


async def optional_person(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Person | None:
    """The person the bearer token belongs to, or None (no token, unknown, or no estate yet).

    For answers that anyone may read but that say more to some roles (the health detail).
    """
    if credentials is None or credentials.scheme.lower() != "bearer":
        return None
    try:
        estate = request.app.state.estate()
    except EstateUnavailableError:
        return None
    return estate.person_with_token_hash(token_sha256(credentials.credentials))


def header_person(estate: Estate, authorization: str | None) -> Person | None:
    """The person whose bearer token an `Authorization` header value carries, if any.

    The same reading of the header as `current_person`'s, for code that runs before
    FastAPI's dependencies (refusing an unknown sender before its body is read).
    """
    scheme, token = get_authorization_scheme_param(authorization)
    if scheme.lower() != "bearer" or not token:
        return None
    return estate.person_with_token_hash(token_sha256(token))


def require(*roles: str) -> Callable[[Person], Awaitable[Person]]:
    """A dependency that lets through only people holding one of `roles` (admin always)."""
    allowed = {*roles, "admin"}

    async def check(person: Annotated[Person, Depends(current_person)]) -> Person:
        if not allowed & set(person.roles):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"{person.name} lacks the role for this ({' or '.join(sorted(allowed))})",
            )
        return person

    return check


READER_ROLES = ("requester", "approver", "operator")
"""Roles that read the desk's records; a monitor only posts events."""

Reader = Annotated[Person, Depends(require(*READER_ROLES))]
"""A route parameter: the person asking, who holds a role that reads the desk's records."""
Operator = Annotated[Person, Depends(require("operator"))]
"""A route parameter: the person asking, an operator (or admin)."""
Sender = Annotated[Person, Depends(require("monitor", "operator"))]
"""A route parameter: the person asking, who may post events (a monitor or an operator)."""


def sees_everything(person: Person | None) -> bool:
    """Whether `person` reads every incident, request and grant (operators and admins).

    Everyone else reads what they reported or asked for, and approvers also what they may
    approve; another person's record is answered 404, as if it did not exist.
    """
    return person is not None and bool({"operator", "admin"} & set(person.roles))


def may_read(person: Person, requester: str, kind: str, approvable: Collection[str]) -> bool:
    """Whether `person` reads a request or grant of `requester` for catalog item or
    entitlement `kind`: operators and admins, its requester, and who may approve `kind`."""
    return sees_everything(person) or requester == person.name or kind in approvable


async def records(request: Request) -> store.Records:
    """The records the app was made with (`app.state.store`)."""
    return request.app.state.store


async def service_requests(request: Request) -> RequestRecords:
    """The service requests in the app's records."""
    return request.app.state.store.requests


async def access_grants(request: Request) -> AccessGrants:
    """The access grants in the app's records."""
    return request.app.state.store.access


async def problems(request: Request) -> ProblemRecords:
    """The problems in the app's records."""
    return request.app.state.store.problems


async def known_errors(request: Request) -> KnownErrorRecords:
    """The known errors in the app's records."""
    return request.app.state.store.known_errors


async def current_estate(request: Request) -> Estate:
    """The estate in use (`app.state.estate()`: cached, reloaded when its files change)."""
    return request.app.state.estate()


async def estate_files(request: Request) -> EstateCache:
    """The estate's files as the desk loads them (`app.state.estate`), for whether they load."""
    return request.app.state.estate


async def wake_ups(request: Request) -> WakeUps:
    """The app's wake-ups to the workers (`app.state.wake_ups`), made on first use.

    Async dependencies run one at a time on the app's event loop, so two requests cannot
    both make one.
    """
    found = getattr(request.app.state, "wake_ups", None)
    if found is None:
        found = request.app.state.wake_ups = WakeUps()
    return found


async def record_changes(request: Request) -> RecordChange:
    """Where the app tells of a service request or access grant submitted or decided
    (`app.state.on_record_change`: the server publishes it to Prefect's event feed)."""
    return request.app.state.on_record_change


Records = Annotated[store.Records, Depends(records)]
"""A route parameter: the records."""
Requests = Annotated[RequestRecords, Depends(service_requests)]
"""A route parameter: the service requests."""
Grants = Annotated[AccessGrants, Depends(access_grants)]
"""A route parameter: the access grants."""
Problems = Annotated[ProblemRecords, Depends(problems)]
"""A route parameter: the problems."""
KnownErrors = Annotated[KnownErrorRecords, Depends(known_errors)]
"""A route parameter: the known errors."""
CurrentEstate = Annotated[Estate, Depends(current_estate)]
"""A route parameter: the estate in use. Declare it after the person asking, so that a
request without a token is told 401 before anything about the estate."""
EstateFiles = Annotated[EstateCache, Depends(estate_files)]
"""A route parameter: the estate's loader, which says whether the files load (never raises)."""
Wake = Annotated[WakeUps, Depends(wake_ups)]
"""A route parameter: the wake-ups that tell the workers work was recorded."""
Publish = Annotated[RecordChange, Depends(record_changes)]
"""A route parameter: tells of a request's or grant's change, e.g. `publish(grant, "approved")`."""
