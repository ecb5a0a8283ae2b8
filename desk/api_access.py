"""The desk's access management API: request, approve or reject, list, revoke, review.

Approval checks the approver against the entitlement (never the requester), records the
decision, then puts the access in place by running the `grant-access` flow in a thread of
this process (a flow run starts at once instead of waiting for a runner to poll), and
answers 202 with the grant; `GET /access-grants/{id}` shows it become active. Revocation
records who asked before any host is touched, so the minute-by-minute `expire-access`
deployment finishes it if this process dies first. While the desk runs, it also expires each
grant it activated at its end, to the second.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from pydantic import BaseModel, ConfigDict

from desk.api_schema import Offset, RecordId
from desk.auth import Operator, Reader, may_read, sees_everything
from desk.lease_keeper import LeaseKeeper, TakeOver
from inventory.models import Entitlement, Estate, Person
from itsm.access import (
    AccessDecision,
    AccessGrant,
    AccessNotEntitledError,
    AccessRequestCreate,
    AccessRequestInvalidError,
    resolve_request,
)
from itsm.access_store import AccessStore
from itsm.approvals import ApprovalRefusedError, check_approver
from itsm.leases import LeaseClaim, Leases
from itsm.store import RecordNotFoundError
from opsflow.errors import OpsError
from opsflow.settings import get_settings

logger = logging.getLogger("opsflow.desk.access")

router = APIRouter(prefix="/api/v1", tags=["access"])

LEASE_PREFIX = "grant:"


class AccessRunner:
    """Runs grant and revoke flows in a small pool of threads, and expiry at each grant's end.

    Expiry has one thread of its own, sleeping until the next active grant it knows of ends;
    each run takes away every grant due, so one run at a time is enough. Grants activated by
    another process are the scheduled `expire-access` deployment's. Once `keep` is called,
    each grant being put in place is leased, and one whose desk died between approval and
    activation is put in place here once its lease lapses.
    """

    def __init__(
        self,
        grant: Callable[[int], Any] | None = None,
        revoke: Callable[[int, str], Any] | None = None,
        expire: Callable[[], Any] | None = None,
        max_workers: int = 4,
    ) -> None:
        self._grant = grant or _run_grant
        self._revoke = revoke or _run_revoke
        self._expire = expire or _run_expire
        self._pool = ThreadPoolExecutor(max_workers, thread_name_prefix="access")
        self._wake = threading.Condition()
        self._ends: list[tuple[float, int]] = []  # heap of (end as a UNIX time, grant id)
        self._expiry_thread: threading.Thread | None = None
        self._stopped = False
        self._grants: AccessStore | None = None
        self._leases: LeaseKeeper | None = None

    def keep(self, grants: AccessStore, lease_s: float | None = None) -> None:
        """Lease the grants put in place here, and take over those whose desk stopped."""
        self._grants = grants
        self._leases = LeaseKeeper(
            Leases(grants.store),
            LEASE_PREFIX,
            lease_s or get_settings().lease_seconds,
            self._take_over,
        )
        self._leases.start()

    def lease_claim(self) -> LeaseClaim | None:
        """The lease an approval takes in its own transaction for this desk (once `keep`)."""
        return None if self._leases is None else self._leases.claim()

    def grant(self, grant_id: int, store: AccessStore) -> Future[Any]:
        """Put an approved grant in place; once active, arrange its expiry at its end.

        The grant's lease was taken for this desk with the approval (`lease_claim`).
        """
        if self._leases is not None:
            self._leases.adopt(f"{LEASE_PREFIX}{grant_id}")
        return self._pool.submit(self._put_in_place, grant_id, store)

    def _put_in_place(self, grant_id: int, store: AccessStore) -> None:
        try:
            self._grant(grant_id)
        except Exception:
            logger.exception("granting access grant %s failed (recorded on the grant)", grant_id)
            return
        finally:
            if self._leases is not None:
                self._leases.release(f"{LEASE_PREFIX}{grant_id}")
        self.schedule_expiry(store.get(grant_id))

    def _take_over(self, name: str, holder: str) -> TakeOver:
        """Put in place a grant approved while a desk that stopped was carrying it."""
        assert self._grants is not None  # set by keep(), which starts the take-overs
        grant = self._grants.get(int(name.removeprefix(LEASE_PREFIX)))
        if grant.state != "approved":
            return "finished"
        logger.warning("putting in place access grant %s, left approved by %s", grant.id, holder)
        self._pool.submit(self._put_in_place, grant.id, self._grants)
        return "carried"

    def revoke(self, grant_id: int, actor: str) -> Future[Any]:
        """Take a grant's access away; on failure the expiry deployment retries it."""

        def run() -> None:
            try:
                self._revoke(grant_id, actor)
            except Exception:
                logger.exception("revoking access grant %s failed; expiry will retry", grant_id)

        return self._pool.submit(run)

    def schedule_expiry(self, grant: AccessGrant) -> None:
        """Run expiry when an active grant ends (the scheduled deployment is the backstop)."""
        if grant.state != "active" or grant.ends_at is None:
            return
        with self._wake:
            if self._stopped:
                return
            heapq.heappush(self._ends, (grant.ends_at.timestamp(), grant.id))
            if self._expiry_thread is None:
                self._expiry_thread = threading.Thread(
                    target=self._expire_when_due, name="access-expiry", daemon=True
                )
                self._expiry_thread.start()
            self._wake.notify()

    def _expire_when_due(self) -> None:
        while True:
            with self._wake:
                while not self._stopped and (not self._ends or self._ends[0][0] > time.time()):
                    self._wake.wait(self._ends[0][0] - time.time() if self._ends else None)
                if self._stopped:
                    return
                while self._ends and self._ends[0][0] <= time.time():
                    heapq.heappop(self._ends)
            try:
                self._expire()
            except Exception:
                logger.exception("expiring access grants failed; the next run retries")

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop expiring, and wait for running grants, revocations and expiry."""
        with self._wake:
            self._stopped = True
            self._wake.notify()
        if self._expiry_thread is not None:
            self._expiry_thread.join(timeout_s)
        self._pool.shutdown(wait=True)
        if self._leases is not None:
            self._leases.stop()


def _run_grant(grant_id: int) -> Any:
    from flows.access_provisioning import grant_access

    return grant_access(grant_id)


def _run_revoke(grant_id: int, actor: str) -> Any:
    from flows.access_provisioning import revoke_access

    return revoke_access(grant_id, actor=actor)


def _run_expire() -> Any:
    from flows.access_provisioning import expire_access

    return expire_access()


_state_lock = threading.Lock()


def access_runner(request: Request) -> AccessRunner:
    """The app's runner (`app.state.access_runner`), created on first use."""
    with _state_lock:
        runner = getattr(request.app.state, "access_runner", None)
        if runner is None:
            runner = request.app.state.access_runner = AccessRunner()
        return runner


def access_grants(request: Request) -> AccessStore:
    """The access grants in the desk's store (`app.state.access_store`), opened on first use."""
    with _state_lock:
        grants = getattr(request.app.state, "access_store", None)
        if grants is None:
            grants = request.app.state.access_store = AccessStore(request.app.state.store)
        return grants


Runner = Annotated[AccessRunner, Depends(access_runner)]
Grants = Annotated[AccessStore, Depends(access_grants)]


@contextmanager
def _refusals() -> Iterator[None]:
    """Refused requests and decisions as HTTP answers: 403 not allowed, 422 does not fit."""
    try:
        yield
    except (AccessNotEntitledError, ApprovalRefusedError) as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, str(exc)) from None
    except AccessRequestInvalidError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None


def _estate(request: Request) -> Estate:
    return request.app.state.estate()


def _entitlement(request: Request, grant: AccessGrant) -> Entitlement:
    try:
        return _estate(request).entitlement(grant.entitlement)
    except KeyError:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"entitlement {grant.entitlement!r} of access grant {grant.id} is no longer in the "
            "estate: nobody can approve or reject it",
        ) from None


def _approvable_entitlements(estate: Estate, person: Person) -> list[str]:
    """The entitlements whose grants `person` may approve (their own excepted)."""
    return [e.name for e in estate.entitlements if e.approvers.admits(person)]


def _visible(grants: AccessStore, grant_id: int, estate: Estate, person: Person) -> AccessGrant:
    """The grant if `person` may see it (theirs, one they may approve, or an operator);
    otherwise 404, exactly as if there were none."""
    grant = grants.get(grant_id)
    approvable = _approvable_entitlements(estate, person)
    if may_read(person, grant.requester, grant.entitlement, approvable):
        return grant
    raise RecordNotFoundError("access_grant", grant_id)


def _what(grant: AccessGrant) -> str:
    """A grant as approval messages name it: "#12 (web-login for carol)"."""
    return f"#{grant.id} ({grant.entitlement} for {grant.username})"


class ReviewRequest(BaseModel):
    """Whether the review removes what no grant explains, or only reports it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enforce: bool = False


@router.post("/access-requests", status_code=status.HTTP_201_CREATED)
def request_access(
    body: AccessRequestCreate, request: Request, person: Reader, grants: Grants
) -> AccessGrant:
    """Ask for an entitlement for yourself; it waits for an approver (state requested)."""
    estate = _estate(request)
    with _refusals():
        resolved = resolve_request(estate, person, body)
        return grants.request(resolved, person.name, datetime.now(UTC))


@router.post("/access-requests/{grant_id}/approve", status_code=status.HTTP_202_ACCEPTED)
def approve_access(
    grant_id: RecordId,
    request: Request,
    person: Reader,
    grants: Grants,
    runner: Runner,
    body: AccessDecision | None = None,
) -> AccessGrant:
    """Approve a request (not your own; the entitlement names who may) and start the grant."""
    grant = _visible(grants, grant_id, _estate(request), person)
    entitlement = _entitlement(request, grant)
    with _refusals():
        check_approver(person, grant.requester, entitlement.approvers, _what(grant))
    approved = grants.decide(
        grant_id,
        True,
        person.name,
        (body or AccessDecision()).comment,
        datetime.now(UTC),
        lease=runner.lease_claim(),
    )
    runner.grant(grant_id, grants)
    return approved


@router.post("/access-requests/{grant_id}/reject")
def reject_access(
    grant_id: RecordId,
    request: Request,
    person: Reader,
    grants: Grants,
    body: AccessDecision | None = None,
) -> AccessGrant:
    """Deny a request (not your own; the entitlement names who may)."""
    grant = _visible(grants, grant_id, _estate(request), person)
    entitlement = _entitlement(request, grant)
    with _refusals():
        check_approver(person, grant.requester, entitlement.approvers, _what(grant))
    return grants.decide(
        grant_id, False, person.name, (body or AccessDecision()).comment, datetime.now(UTC)
    )


@router.get("/access-grants")
def list_access_grants(
    request: Request,
    person: Reader,
    grants: Grants,
    state: Annotated[list[str] | None, Query()] = None,
    requester: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Offset = 0,
) -> list[AccessGrant]:
    """Access grants, newest first, filtered by state or requester.

    Operators see every grant; others their own and those they may approve.
    """
    everything = sees_everything(person)
    return grants.list(
        state=state,
        requester=requester,
        limit=limit,
        offset=offset,
        visible_to=None if everything else person.name,
        entitlements=() if everything else _approvable_entitlements(_estate(request), person),
    )


@router.get("/access-grants/{grant_id}")
def show_access_grant(
    grant_id: RecordId, request: Request, person: Reader, grants: Grants
) -> AccessGrant:
    """One access grant: its state, hosts, end, and the last error if a run failed (404 if
    it is neither yours nor one you may approve)."""
    return _visible(grants, grant_id, _estate(request), person)


@router.delete("/access-grants/{grant_id}", status_code=status.HTTP_202_ACCEPTED)
def revoke_access_grant(
    grant_id: RecordId, request: Request, person: Reader, grants: Grants, runner: Runner
) -> AccessGrant:
    """Revoke a grant (its requester, its approvers, operators: 404 for anyone else, who may
    not see it); a pending request is withdrawn.

    The revocation is recorded at once and carried out on the hosts in the background.
    """
    grant = _visible(grants, grant_id, _estate(request), person)
    now = datetime.now(UTC)
    if grant.state == "requested":
        return grants.decide(grant_id, False, person.name, "withdrawn", now)
    marked = grants.request_revoke(grant_id, person.name, now)
    runner.revoke(grant_id, person.name)
    return marked


@router.post("/access-reviews")
def review_access_now(body: ReviewRequest, person: Operator) -> list[dict[str, Any]]:
    """Compare every host with the live grants now; `enforce` removes what none explains."""
    from flows.access_provisioning import review_access

    try:
        return review_access(enforce=body.enforce)
    except OpsError as exc:  # some host could not be read; the run's artifact has the rest
        raise HTTPException(status.HTTP_502_BAD_GATEWAY, str(exc)) from None
