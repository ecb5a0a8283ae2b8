"""Access provisioning: grant, revoke, expire and review access on the estate's hosts.

`grant_access` creates the account, installs the requester's key and, for sudo, a validated
sudoers.d rule on every host of the entitlement's group, inside a Prefect transaction: if any
host fails, the rollback hooks of the tasks that succeeded undo them, so no host keeps part of
a grant. `revoke_access` and `expire_access` take away exactly what grants added; expiry reads
the store every minute, so a restart loses nothing. `review_access` compares every host with
the live grants and reports, or with `enforce` removes, what no grant explains (what the
review finds is `tasks.access.review`'s).

One module, over 500 lines, on purpose: it is one deployable process whose four flows share
the grant's records (read and moved through tasks), the per-account lock, the fan-out and the
taking away that revocation, expiry and enforcement all do; prefect.yaml's entrypoints name
its flows here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from typing import Any
from uuid import uuid4

from prefect import flow, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NONE
from prefect.futures import PrefectFuture
from prefect.logging import get_run_logger
from prefect.transactions import transaction

from opsflow.errors import OpsError, PermanentError
from opsflow.inventory.models import Estate, Host
from opsflow.itsm.access import (
    LIVE_STATES,
    MARKER_PREFIX,
    AccessGrant,
    AccessState,
    grant_covers,
    marker,
)
from opsflow.itsm.store.records import open_records
from opsflow.settings import get_settings
from opsflow.tasks.access.accounts import ensure_account, remove_account
from opsflow.tasks.access.facts import read_access_facts
from opsflow.tasks.access.keys import install_key, remove_key
from opsflow.tasks.access.review import ReviewItem, explain
from opsflow.tasks.access.sudo import install_sudo_rule, remove_sudo_rule
from opsflow.tasks.change import Change
from opsflow.tasks.events import publish_grant_change
from opsflow.tasks.fanout import HostOutcome, map_calls, map_hosts, raise_failures, submit_calls
from opsflow.tasks.inventory import read_estate
from opsflow.tasks.notify import notify_person
from opsflow.tasks.records import current_flow_run_id

ACTOR = "access-provisioning"
LOCK_WAIT_S = 300.0
"""How long a change waits for its account's lock before it fails, recorded on the grant."""


class AccessProvisioningError(PermanentError):
    """A grant cannot be put in place or taken away as asked; the message says why."""


# --- the records, through tasks --------------------------------------------------------------


@task(cache_policy=NONE, timeout_seconds=60, task_run_name="read_grant[{grant_id}]")
def read_grant(grant_id: int) -> AccessGrant:
    """One access grant from the store."""
    return open_records().access.get(grant_id)


@task(cache_policy=NONE, timeout_seconds=60)
def read_live_grants() -> list[AccessGrant]:
    """Every approved or active grant, which together explain what hosts may hold."""
    return open_records().access.live()


@task(cache_policy=NONE, timeout_seconds=60)
def read_grants_due(now: datetime) -> list[AccessGrant]:
    """Live grants past their end, or whose revocation is pending."""
    return open_records().access.due_for_removal(now)


@task(cache_policy=NONE, timeout_seconds=60, task_run_name="link_run[{grant_id}]")
def link_run(grant_id: int) -> None:
    """Record this flow run on the grant, so the record leads to the run in the UI."""
    run_id = current_flow_run_id()
    if run_id:
        open_records().access.link_flow_run(grant_id, run_id, now=datetime.now(UTC))


@task(cache_policy=NONE, timeout_seconds=60, task_run_name="activate_grant[{grant_id}]")
def activate_grant(grant_id: int, hosts: list[str]) -> AccessGrant:
    """Mark the grant active on `hosts` from now until now plus its duration, and tell
    Prefect's event feed (`opsflow.access.granted`)."""
    grants = open_records().access
    grant = grants.activate(grant_id, hosts, datetime.now(UTC), ACTOR, current_flow_run_id())
    publish_grant_change(grant, "granted")
    return grant


@task(cache_policy=NONE, timeout_seconds=60, task_run_name="request_revoke[{grant_id}]")
def request_revoke(grant_id: int, actor: str) -> AccessGrant:
    """Mark the grant for revocation first, so expiry retries it if this run fails."""
    return open_records().access.request_revoke(grant_id, actor, datetime.now(UTC))


@task(cache_policy=NONE, timeout_seconds=60, task_run_name="end_grant[{grant_id}:{state}]")
def end_grant(grant_id: int, state: AccessState) -> AccessGrant:
    """Close the grant, expired or revoked, once its access is gone from every host, and
    tell Prefect's event feed (`opsflow.access.expired` or `.revoked`)."""
    grant = open_records().access.end(
        grant_id, state, datetime.now(UTC), ACTOR, current_flow_run_id()
    )
    publish_grant_change(grant, state)
    return grant


@task(cache_policy=NONE, timeout_seconds=60, task_run_name="record_failure[{grant_id}]")
def record_failure(grant_id: int, error: str) -> None:
    """Keep on the grant why this run failed."""
    grants = open_records().access
    grants.record_error(grant_id, error, datetime.now(UTC), ACTOR, current_flow_run_id())


# --- fan-out helpers --------------------------------------------------------------------------


class _Isolated:
    """Submits each task run inside its own nested transaction of the grant's transaction.

    Prefect rolls a task's enclosing transaction back the moment the task fails, from the
    task's thread, while its siblings on other hosts may still be running; those finishing
    later would then never be rolled back. A nested transaction per task run confines that
    early rollback to the failed run; the flow raises once every host has answered, and the
    grant's transaction then rolls back every successful run, newest first.
    """

    def __init__(self, task_: Any) -> None:
        # A retried attempt would join an already rolled-back nested transaction: no retries.
        self._task = task_.with_options(retries=0)

    def submit(self, **kwargs: Any) -> PrefectFuture[Any]:
        """Submit one run in a nested transaction that the grant's transaction owns."""
        with transaction():
            return self._task.submit(**kwargs)


def _hosts_of_group(estate: Estate, group: str) -> list[Host]:
    names = estate.groups.get(group, [])
    if not names:
        raise AccessProvisioningError(f"no host of the estate is in group {group!r}")
    return [estate.host(n) for n in names]


def _grant_hosts(estate: Estate, grant: AccessGrant) -> list[Host]:
    """The hosts a grant's access is on: those recorded at activation, else its group's."""
    if not grant.hosts:
        return _hosts_of_group(estate, grant.host_group)
    missing = [n for n in grant.hosts if n not in {h.name for h in estate.hosts}]
    if missing:
        raise AccessProvisioningError(
            f"access grant {grant.id} is on hosts the estate no longer lists: "
            f"{', '.join(missing)}; remove its access there by hand"
        )
    return [estate.host(n) for n in grant.hosts]


def _changes(outcomes: Sequence[HostOutcome[Any]]) -> list[Change]:
    return [o.result for o in outcomes if o.ok and o.result is not None]


def _publish(key: str, changes: list[Change], summary: str) -> None:
    rows = [c.model_dump() for c in changes]
    create_table_artifact(key=key, table=rows or [{"detail": "nothing to do"}], description=summary)


# --- grant --------------------------------------------------------------------------------------


@contextmanager
def _user_lock(username: str, timeout_s: float = LOCK_WAIT_S) -> Iterator[None]:
    """Hold the account's lock: grants and revocations of one username never interleave.

    Otherwise revoking one grant could remove an account another grant of the same person is
    being put on (its key not there yet to show the account is in use). The lock is a lease
    in the records store, renewed while it is held, so it holds across processes and lapses
    within a lease (`OPSFLOW_LEASE_SECONDS`) of its holder dying: the worker that takes the
    dead one's change over gets the account well before `timeout_s`.
    """
    leases, name, holder = open_records().leases, f"user:{username}", uuid4().hex
    lease_s = get_settings().lease_seconds
    deadline = time.monotonic() + timeout_s
    while not leases.take(name, holder, datetime.now(UTC), lease_s):
        if time.monotonic() > deadline:
            raise AccessProvisioningError(
                f"account {username!r} is still being changed by another run after {timeout_s:g}s"
            )
        time.sleep(0.05)
    try:
        with leases.renewing(name, holder, lease_s):
            yield
    finally:
        leases.release(name, holder)


def _grant_steps(grant: AccessGrant) -> list[tuple[Any, dict[str, Any]]]:
    steps: list[tuple[Any, dict[str, Any]]] = [
        (ensure_account, {"username": grant.username}),
        (
            install_key,
            {"username": grant.username, "public_key": grant.ssh_public_key, "grant_id": grant.id},
        ),
    ]
    if grant.privilege == "sudo":
        steps.append(
            (
                install_sudo_rule,
                {
                    "username": grant.username,
                    "grant_id": grant.id,
                    "entitlement": grant.entitlement,
                },
            )
        )
    return steps


@flow(name="grant-access", flow_run_name="grant-access-{grant_id}")
def grant_access(grant_id: int, dry_run: bool = False) -> list[dict[str, Any]]:
    """Put an approved grant's access in place on every host of its group, all or nothing.

    Running it again on an active grant changes nothing (every task reports unchanged).

    Args:
        grant_id: the access grant's id.
        dry_run: report what would change on each host and change nothing (any state).

    Returns the per-host changes, as dicts of `Change`.
    """
    grant = read_grant(grant_id)
    if dry_run:
        return _grant(grant, dry_run=True)[0]
    link_run(grant.id)  # before waiting for the account: whoever takes over finds this run
    with _user_lock(grant.username):
        rows, tell = _grant(read_grant(grant_id), dry_run=False)
    tell()  # outside the account's lock: a slow channel must not hold up its next change
    return rows


def _tell_nobody() -> None:
    """A dry run, or a grant that failed, tells nobody (a failure is on the grant)."""


def _grant(grant: AccessGrant, dry_run: bool) -> tuple[list[dict[str, Any]], Callable[[], None]]:
    """The grant put in place (or its dry run): its changes, and how to tell the requester."""
    logger = get_run_logger()
    tell: Callable[[], None] = _tell_nobody
    if not dry_run and grant.state not in LIVE_STATES:
        raise AccessProvisioningError(
            f"access grant {grant.id} is {grant.state}: only an approved or active grant "
            "is put in place"
        )
    if not dry_run and grant.revoke_requested_at is not None:
        raise AccessProvisioningError(f"access grant {grant.id} is being revoked")
    estate = read_estate()
    hosts = _hosts_of_group(estate, grant.host_group)
    limit = estate.settings.ssh_concurrency
    changes: list[Change] = []
    what = f"grant {marker(grant.id)} ({grant.entitlement} for {grant.username})"
    try:
        with transaction():
            for step, kwargs in _grant_steps(grant):
                calls = [(host, {**kwargs, "dry_run": dry_run}) for host in hosts]
                outcomes = submit_calls(_Isolated(step), calls, limit)
                changes += _changes(outcomes)
                raise_failures(what, outcomes)
    except OpsError as exc:
        logger.error("%s failed and was rolled back on every host: %s", what, exc)
        if not dry_run:
            record_failure(grant.id, f"rolled back on every host: {exc}")
        _publish(f"access-grant-{grant.id}", changes, f"**{what} failed, rolled back.** {exc}")
        raise
    if dry_run:
        planned = sum(c.state == "planned" for c in changes)
        summary = f"Dry run of {what}: {planned} change(s) would be made."
    else:
        changed = sum(c.changed for c in changes)
        grant = activate_grant(grant.id, [h.name for h in hosts])
        summary = (
            f"{what} active on {len(hosts)} host(s) until {grant.ends_at:%Y-%m-%d %H:%M:%S}Z: "
            f"{changed} change(s)."
        )
        tell = partial(
            _tell_requester, estate, grant, f"active until {grant.ends_at:%Y-%m-%d %H:%M}Z", summary
        )
    logger.info(summary)
    _publish(f"access-grant-{grant.id}", changes, summary)
    return [c.model_dump() for c in changes], tell


# --- revoke and expire -----------------------------------------------------------------------


def _take_away(
    estate: Estate, grant: AccessGrant, dry_run: bool = False
) -> tuple[list[Change], list[HostOutcome[Any]]]:
    """Remove the grant's sudo rule, key and (if unused) account on each host, in that order.

    Every host is attempted; a host stops at its first failed step, so its account is never
    removed while the grant's key or rule may still be there. On each host the account is
    kept only for the other live grants of the same account that cover that host.
    """
    hosts = _grant_hosts(estate, grant)
    limit = estate.settings.ssh_concurrency
    others = _other_live(grant)
    steps: list[tuple[Any, Any]] = []
    if grant.privilege == "sudo":
        steps.append((remove_sudo_rule, lambda _: {"name": marker(grant.id)}))
    steps += [
        (remove_key, lambda _: {"username": grant.username, "grant_id": grant.id}),
        (
            remove_account,
            lambda host: {
                "username": grant.username,
                "still_granted": [g for g in others if grant_covers(g, host.name, estate.groups)],
            },
        ),
    ]
    changes: list[Change] = []
    failures: list[HostOutcome[Any]] = []
    for step, kwargs_for in steps:
        if not hosts:
            break
        calls = [(host, {**kwargs_for(host), "dry_run": dry_run}) for host in hosts]
        outcomes = map_calls(step, calls, limit)
        changes += _changes(outcomes)
        failures += [o for o in outcomes if not o.ok]
        hosts = [o.host for o in outcomes if o.ok]
    return changes, failures


def _other_live(grant: AccessGrant) -> list[AccessGrant]:
    """The other live grants for the same account: only what they installed keeps it."""
    return [g for g in read_live_grants() if g.username == grant.username and g.id != grant.id]


def _tell_requester(estate: Estate, grant: AccessGrant, what: str, body: str) -> None:
    """Tell the requester what became of their access; a failure to tell is only logged."""
    try:
        notify_person(
            estate, grant.requester, f"[opsflow] access {grant.entitlement}: {what}", body
        )
    except Exception as exc:
        get_run_logger().warning(
            "telling %s about grant %s failed: %s", grant.requester, grant.id, exc
        )


def _close(estate: Estate, grant_id: int, state: AccessState | None) -> list[Change] | None:
    """Under the account's slot, take a live grant's access away and close it.

    `state` None means expiry: expired, or revoked when a revocation was asked for; then a
    grant not yet at its end is left alone. Returns None when there was nothing to do. On a
    failure the error is kept on the grant (which stays live, so expiry tries again).
    """
    grant = read_grant(grant_id)
    with _user_lock(grant.username):
        grant = read_grant(grant_id)
        if grant.state not in LIVE_STATES:
            return None
        if state is None:
            if grant.revoke_requested_at is None and grant.due_end() > datetime.now(UTC):
                return None
            state = "revoked" if grant.revoke_requested_at else "expired"
        link_run(grant.id)
        changes, failures = _take_away(estate, grant)
        try:
            raise_failures(f"taking away {marker(grant.id)} ({state})", failures)
        except OpsError as exc:
            record_failure(grant.id, str(exc))
            raise
        end_grant(grant.id, state)
    # Outside the account's lock: a slow channel must not hold up its next change.
    _tell_requester(estate, grant, state, f"{marker(grant.id)} ({grant.entitlement}) {state}")
    return changes


@flow(name="revoke-access", flow_run_name="revoke-access-{grant_id}")
def revoke_access(grant_id: int, actor: str = ACTOR, dry_run: bool = False) -> list[dict[str, Any]]:
    """Take a grant's access away from every host it is on, and close it as revoked.

    The revocation is recorded before any host is touched, so if a host fails, `expire_access`
    finishes the job on its next run.

    Args:
        grant_id: the access grant's id.
        actor: who asked, for the audit trail.
        dry_run: report what would be removed and change nothing.
    """
    logger = get_run_logger()
    grant = read_grant(grant_id)
    if grant.state not in LIVE_STATES:
        logger.info("access grant %s is %s: nothing to revoke", grant.id, grant.state)
        return []
    estate = read_estate()
    if dry_run:
        changes, failures = _take_away(estate, grant, dry_run=True)
        raise_failures(f"dry run of revoking {marker(grant.id)}", failures)
    else:
        request_revoke(grant.id, actor)
        changes = _close(estate, grant.id, "revoked") or []
    summary = f"{marker(grant.id)} ({grant.entitlement} for {grant.username}) " + (
        "dry run" if dry_run else "revoked"
    )
    _publish(f"access-revoke-{grant.id}", changes, summary)
    return [c.model_dump() for c in changes]


@flow(name="expire-access")
def expire_access() -> list[dict[str, Any]]:
    """Take away every grant past its end, and finish revocations that failed before.

    Scheduled every minute; it reads the grants from the store, so nothing is lost when a
    process restarts. One failing grant does not stop the others; the run fails at the end.
    """
    logger = get_run_logger()
    due = read_grants_due(datetime.now(UTC))
    if not due:
        return []
    estate = read_estate()
    rows: list[dict[str, Any]] = []
    errors: list[str] = []
    for grant in due:
        try:
            changes = _close(estate, grant.id, None)
        except OpsError as exc:
            logger.error("%s: %s", marker(grant.id), exc)
            errors.append(f"{marker(grant.id)}: {exc}")
            rows.append({"grant": grant.id, "state": grant.state, "detail": str(exc)})
            continue
        if changes is not None:
            done = read_grant(grant.id)
            count = sum(c.changed for c in changes)
            rows.append({"grant": grant.id, "state": done.state, "detail": f"{count} change(s)"})
    create_table_artifact(
        key="access-expiry",
        table=rows or [{"detail": "nothing was due after all"}],
        description=f"{len(due)} grant(s) due, {len(errors)} failed",
    )
    if errors:
        raise AccessProvisioningError("some grants could not be taken away:\n" + "\n".join(errors))
    return rows


# --- review -------------------------------------------------------------------------------------


def _enforce(estate: Estate, items: list[ReviewItem]) -> None:
    """Remove every unexplained item: sudo rules and keys first, then accounts."""
    hosts = {h.name: h for h in estate.hosts}
    unexplained = [i for i in items if i.explained_by is None]
    # Accounts last: removing one deletes its home, which would race its keys' removal.
    for phase in (("sudo_rule", "key"), ("account",)):
        futures: list[tuple[ReviewItem, PrefectFuture[Any]]] = []
        for item in (i for i in unexplained if i.kind in phase):
            host = hosts[item.host]
            if item.kind == "sudo_rule":
                future = remove_sudo_rule.submit(host=host, name=item.name)
            elif item.kind == "key":
                username, _, tag = item.name.partition(":")
                grant_id = int(tag.removeprefix(MARKER_PREFIX))
                future = remove_key.submit(host=host, username=username, grant_id=grant_id)
            else:
                future = remove_account.submit(host=host, username=item.name, still_granted=None)
            futures.append((item, future))
        for item, future in futures:
            try:
                change: Change = future.result()
            except OpsError as exc:
                item.action, item.detail = "failed", str(exc)
            else:
                item.action, item.detail = "removed", change.detail


@flow(name="review-access")
def review_access(enforce: bool = False) -> list[dict[str, Any]]:
    """Compare every host's managed accounts, keys and sudo rules with the live grants.

    Reports what no grant explains in a table artifact; with `enforce`, removes it. Only
    things opsflow marks as its own are looked at, so nothing else on a host is touched.
    """
    logger = get_run_logger()
    estate = read_estate()
    outcomes = map_hosts(read_access_facts, estate.hosts, estate.settings.ssh_concurrency)
    # Grants after facts: whatever a grant put on a host was approved before it was read.
    grants = read_live_grants()
    items = explain(estate, grants, [o.result for o in outcomes if o.ok and o.result is not None])
    if enforce:
        _enforce(estate, items)
    unexplained = [i for i in items if i.explained_by is None]
    rows = [i.model_dump() for i in items]
    unreadable = [o for o in outcomes if not o.ok]
    rows += [
        {
            "host": o.host.name,
            "kind": "host",
            "name": "",
            "explained_by": None,
            "action": "failed",
            "detail": str(o.error),
        }
        for o in unreadable
    ]
    summary = (
        f"**{len(unexplained)} of {len(items)} managed item(s) on {len(outcomes)} host(s) "
        f"explained by no grant**" + (" (enforced)" if enforce else "")
    )
    logger.info(summary)
    create_table_artifact(
        key="access-review",
        table=rows or [{"detail": "nothing managed found"}],
        description=summary,
    )
    raise_failures("access review", unreadable)
    return rows


if __name__ == "__main__":
    import sys

    review_access(enforce="--enforce" in sys.argv[1:])
