"""Rolling deploys on the real lab: five sshd hosts running the app, watched by real Prometheus
and Alertmanager posting to a real desk whose triage opens incidents.

Every host's /health is polled from a thread all through each rollout, so the tests see what
a user of the service would: how many hosts answered healthy at the worst moment.
"""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime, timedelta

import pytest
import requests

from opsflow.errors import PermanentError
from opsflow.flows.application_deploy import deploy_release
from opsflow.itsm.store.records import open_records
from opsflow.lab.hosts.probes import app_health, app_version
from opsflow.lab.hosts.releases import INITIAL_RELEASE
from opsflow.lab.hosts.run import run_on_host
from opsflow.lab.monitoring import firing_alerts
from tests.support.waiting import wait_for

pytestmark = pytest.mark.usefixtures("ssh_credentials")

CURRENT = "/var/lib/app/current"


class HealthPoller:
    """Polls every host's /health from a thread; `fewest` is the lowest count seen healthy."""

    def __init__(self, addresses: dict[str, str]) -> None:
        self.addresses = addresses
        self.fewest = len(addresses)
        self.rounds = 0
        self.unhealthy: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> HealthPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _poll(self) -> None:
        while not self._stop.is_set():
            healthy = {n for n, a in self.addresses.items() if app_health(a, timeout=0.5)}
            self.unhealthy |= set(self.addresses) - healthy
            self.fewest = min(self.fewest, len(healthy))
            self.rounds += 1
            self._stop.wait(0.05)


def _monitoring_caught_up(monitoring, ended: datetime) -> None:
    """Wait until what happened up to `ended` has reached the desk's decisions: Prometheus has
    evaluated its rules on scrapes taken after it, Alertmanager holds no alert, and the desk
    has triaged every event it stored. Only then does "no incident" mean none would come."""
    rules_url = f"{monitoring.prometheus_url}/api/v1/rules"
    after = ended + timedelta(seconds=2)  # a scrape interval and an evaluation interval on

    def evaluated_after() -> bool:
        groups = requests.get(rules_url, timeout=5).json()["data"]["groups"]
        return bool(groups) and all(
            datetime.fromisoformat(g["lastEvaluation"]) > after for g in groups
        )

    wait_for(evaluated_after, 30, "Prometheus to evaluate its rules after the rollout")
    wait_for(lambda: firing_alerts(monitoring) == [], 30, "Alertmanager to hold no alert")
    wait_for(lambda: not open_records().events.any_pending(), 30, "the desk to triage every event")


def _link(lab, host: str) -> str:
    return run_on_host(host, ["readlink", CURRENT], lab.directory).stdout.strip()


def _pids(lab) -> dict[str, int]:
    return {h.name: (app_health(h.address, timeout=2) or {}).get("pid") for h in lab.hosts}


def _record(version: str, requester: str = "alice", **options):
    return open_records().releases.create(
        "app", version, requester, requester, requester, datetime.now(UTC), **options
    )


def _opened_between(start: datetime, end: datetime) -> list:
    """Incidents of the app opened in [start, end]: an incident another test opened for an
    alert stamped in the future (tests/e2e/test_poison_events.py) is not this rollout's."""
    return [i for i in open_records().incidents.list(service="app") if start <= i.opened_at <= end]


def test_a_dry_run_prints_the_plan_and_changes_nothing(lab, initial_release) -> None:
    pids = _pids(lab)
    plan = deploy_release(service="app", version="1.1.0", batch="2", canary=1, dry_run=True)
    names = [h.name for h in lab.hosts]
    assert plan.state == "planned"
    assert plan.batches == [names[:1], names[1:3], names[3:5]]
    assert {c.state for c in plan.hosts} == {"planned"}
    assert "would point current from 1.0.0 to 1.1.0" in plan.hosts[0].detail
    assert plan.summary.startswith("dry run: app 1.1.0 on 5 of 5 hosts: [lab01] then")
    assert {h.name: _link(lab, h.name) for h in lab.hosts} == dict.fromkeys(names, "releases/1.0.0")
    assert _pids(lab) == pids
    with pytest.raises(PermanentError, match="release: name a recorded release"):
        deploy_release(service="app", version="1.1.0")
    with pytest.raises(
        PermanentError, match=re.escape("version '1.1.0;id' is not a release version")
    ):
        deploy_release(service="app", version="1.1.0;id", dry_run=True)


def test_a_good_release_rolls_out_in_batches_of_two_without_an_incident(
    lab, monitoring, pager, initial_release
) -> None:
    started = datetime.now(UTC)
    record = _record("1.1.0", batch="2")
    with HealthPoller({h.name: h.address for h in lab.hosts}) as poller:
        plan = deploy_release(record.number, gate_deadline_s=20)
        _monitoring_caught_up(monitoring, datetime.now(UTC))
    assert plan.state == "deployed", plan.summary
    assert [len(b) for b in plan.batches] == [2, 2, 1]
    for host in lab.hosts:
        assert app_version(host.address, timeout=2) == "1.1.0"
        assert _link(lab, host.name) == "releases/1.1.0"
    assert poller.rounds > 20
    assert poller.fewest >= len(lab.hosts) - 2, f"only {poller.fewest} hosts healthy at worst"
    assert poller.unhealthy, "no host was ever seen restarting: the poller saw nothing"

    done = open_records().releases.get(record.id)
    assert (done.state, done.from_version, done.rollback) == ("deployed", "1.0.0", None)
    assert [h.step for h in done.hosts] == ["deployed"] * 5
    assert done.flow_run_ids
    opened = _opened_between(started, datetime.now(UTC))
    assert opened == [], [(i.number, i.summary) for i in opened]
    windows = [
        w
        for w in open_records().maintenance.between(started, datetime.now(UTC))
        if w.start >= started and w.reason.startswith(record.number)
    ]
    assert sorted(h for w in windows for h in w.hosts) == sorted(h.name for h in lab.hosts)
    assert all(len(w.hosts) == 1 for w in windows)

    # The same version again: every host already runs it, nothing is restarted.
    pids = _pids(lab)
    again = deploy_release(_record("1.1.0", batch="2").number)
    assert again.state == "deployed" and again.hosts == []
    assert [h.step for h in open_records().releases.get(again.release).hosts] == ["unchanged"] * 5
    assert _pids(lab) == pids


def test_a_release_failing_its_gate_stops_at_the_canary_and_is_rolled_back(
    lab, monitoring, pager, initial_release
) -> None:
    started = datetime.now(UTC)
    pids = _pids(lab)
    record = _record("1.2.0-badhealth", requester="carol", batch="2", canary=1)
    with HealthPoller({h.name: h.address for h in lab.hosts}) as poller:
        plan = deploy_release(record.number, gate_deadline_s=4, gate_passes=2)
    assert plan.state == "failed"
    canary, *others = lab.hosts
    failed = open_records().releases.get(record.id)
    assert failed.state == "failed"
    assert failed.outcome.startswith(f"stopped: {canary.name}: app did not pass its health check")
    assert failed.rollback.startswith("rollback complete: ")
    assert [(h.host, h.step) for h in failed.hosts] == [(canary.name, "rolled-back")] + [
        (h.name, "pending") for h in others
    ]
    assert app_version(canary.address, timeout=2) == INITIAL_RELEASE
    assert _link(lab, canary.name) == f"releases/{INITIAL_RELEASE}"
    now = _pids(lab)
    assert now[canary.name] != pids[canary.name]
    assert {h.name: now[h.name] for h in others} == {h.name: pids[h.name] for h in others}
    assert {_link(lab, h.name) for h in others} == {f"releases/{INITIAL_RELEASE}"}
    assert poller.fewest >= len(lab.hosts) - 1
    assert poller.unhealthy <= {canary.name}

    subject = f"[opsflow] {record.number} app 1.2.0-badhealth: failed"
    page = wait_for(
        lambda: next((p for p in pager.pages if p["body"].get("subject") == subject), None),
        15,
        "carol's team to be told",
    )
    assert "Rollback: rollback complete" in page["body"]["body"]
    actions = [e.action for e in open_records().releases.audit_trail(record.id)]
    assert actions[-2:] == ["release.failed", "release.requester_notified"]
    opened = _opened_between(started, datetime.now(UTC))
    assert opened == [], [(i.number, i.summary) for i in opened]


def test_a_host_of_the_failing_batch_that_finished_is_put_back_too(lab, initial_release) -> None:
    # lab02 lacks the release: its step fails before changing anything, while lab01 in the
    # same batch finishes: lab01 must go back, and nothing else be touched.
    first, second, *rest = lab.hosts
    hidden = "/var/lib/app/releases/.1.1.0-hidden"
    run_on_host(second.name, ["mv", "/var/lib/app/releases/1.1.0", hidden], lab.directory)
    try:
        pids = _pids(lab)
        record = _record("1.1.0", batch="2")
        plan = deploy_release(record.number, gate_deadline_s=20)
    finally:
        run_on_host(second.name, ["mv", hidden, "/var/lib/app/releases/1.1.0"], lab.directory)
    failed = open_records().releases.get(record.id)
    assert plan.state == failed.state == "failed"
    assert "no release 1.1.0" in failed.outcome
    steps = [(h.host, h.step) for h in failed.hosts]
    assert steps == [(first.name, "rolled-back"), (second.name, "pending")] + [
        (h.name, "pending") for h in rest
    ]
    assert failed.rollback.startswith("rollback complete: ")
    assert {h.name: _link(lab, h.name) for h in lab.hosts} == {
        h.name: f"releases/{INITIAL_RELEASE}" for h in lab.hosts
    }
    assert app_version(first.address, timeout=2) == INITIAL_RELEASE
    now = _pids(lab)
    assert {h.name: now[h.name] for h in [second, *rest]} == {
        h.name: pids[h.name] for h in [second, *rest]
    }


def test_a_rollout_whose_run_stopped_is_rolled_back_by_the_next_run(
    lab, estate, initial_release
) -> None:
    from opsflow.itsm.releases import ReleaseHost
    from opsflow.tasks.releases import put_release, restart_release

    # What a run killed mid-way leaves: lab01 switched and restarted, recorded as deploying.
    host = lab.hosts[0]
    records = open_records().releases
    record = _record("1.1.0", batch="2")
    now = datetime.now(UTC)
    planned = [ReleaseHost(host=h.name, previous=INITIAL_RELEASE) for h in lab.hosts]
    records.plan_hosts(record.id, planned, INITIAL_RELEASE, "dead-run", now)
    records.move(record.id, "rolling-out", "dead-run", now)
    step = ReleaseHost(host=host.name, previous=INITIAL_RELEASE, step="deploying")
    records.record_host(record.id, step, "dead-run", now)
    app = estate.service("app")
    put_release.fn(estate.host(host.name), app, "1.1.0")
    restart_release.fn(estate.host(host.name), app)
    assert app_version(host.address, timeout=2) == "1.1.0"

    plan = deploy_release(record.number, gate_deadline_s=20)
    done = records.get(record.id)
    assert plan.state == done.state == "failed"
    assert done.outcome.startswith("interrupted: the run carrying it stopped mid-way")
    assert done.host(host.name).step == "rolled-back"
    assert app_version(host.address, timeout=2) == INITIAL_RELEASE
    assert {_link(lab, h.name) for h in lab.hosts} == {f"releases/{INITIAL_RELEASE}"}
    # Run once more: a final release is left as it is, and nothing more is recorded.
    trail = records.audit_trail(record.id)
    again = deploy_release(record.number)
    assert again.state == "failed"
    assert [e.action for e in records.audit_trail(record.id)] == [e.action for e in trail]


def test_an_outage_right_after_a_release_is_linked_to_it(
    lab, monitoring, pager, initial_release
) -> None:
    from opsflow.lab.hosts.breakage import break_host

    records = open_records()
    record = _record("1.1.0", batch="100%")
    assert deploy_release(record.number, gate_deadline_s=20).state == "deployed"
    # Rollouts' windows cover their own restarts and a grace after them: end them now (this
    # one's and the earlier tests'), as if the grace had passed, so that the outage below is
    # nobody's maintenance.
    now = datetime.now(UTC)
    for window in records.maintenance.between(now - timedelta(hours=1), now):
        if window.name == "deploy-release":
            records.maintenance.close(window.id, now, now)
    host = lab.hosts[1].name

    break_host(host, "service", lab.directory)
    incident = wait_for(
        lambda: next(
            (i for i in records.incidents.list(service="app", host=host) if i.opened_at >= now),
            None,
        ),
        30,
        f"an incident about app on {host}",
    )
    notes = wait_for(
        lambda: [w.text for w in records.worklog.entries(incident.id) if record.number in w.text],
        15,
        f"{incident.number}'s worklog to name {record.number}",
    )
    assert notes[0].startswith(f"opened after release {record.number} (app 1.0.0 -> 1.1.0")
    linked = records.releases.get(record.id)
    assert linked.incidents == [incident.number]
    assert "release.incident_linked" in [e.action for e in records.releases.audit_trail(record.id)]
    wait_for(
        lambda: records.incidents.get(incident.id).state in ("Resolved", "Closed"),
        60,
        f"{incident.number} to be restored",
    )

    # The problem review reports incidents per release.
    from opsflow.flows.problem_review import problem_review

    problem_review()
    artifact_markdown = _latest_artifact("problem-review")
    assert "## Incidents after releases" in artifact_markdown
    assert f"| {record.number} | app | 1.0.0 -> 1.1.0 | deployed | 1: {incident.number} |" in (
        artifact_markdown
    )


def _latest_artifact(key: str) -> str:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        artifact = client.read_latest_artifacts()
        found = [a for a in artifact if a.key == key]
    assert found, f"no artifact {key}"
    return str(found[0].data)
