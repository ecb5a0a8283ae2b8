"""Bearer tokens to people and roles, from the estate's people.yaml (which holds only hashes).

Role checks are dependencies (`require`); which records a person may read is `sees_everything`
plus each resource's own rule (their own, or what they may approve).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param

from opsflow.desk.estate import EstateUnavailableError
from opsflow.inventory.models import Estate, Person, token_sha256

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
