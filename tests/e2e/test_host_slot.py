"""One flow at a time acts on a host: two restorations on one host do not overlap."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from flows.incident_restoration import incident_restoration
from itsm.records import IncidentCreate
from lab.hosts import SVC, run_on_host
from tasks.records import open_store


def window(incident_id: int) -> tuple[datetime, datetime]:
    entries = open_store().worklog(incident_id)
    started = next(w.at for w in entries if w.text.startswith("runbook "))
    verified = next(w.at for w in entries if w.text.startswith("verified:"))
    return started, verified


def test_two_restorations_on_one_host_take_turns(lab, desk) -> None:
    host = lab.hosts[0].name
    run_on_host(host, [SVC, "stop"], lab.directory)
    incidents = [
        open_store().open_or_correlate(
            IncidentCreate(
                host=host, service="app", symptom="service-down", summary=f"slot test {n}",
                impact=2, urgency=1, runbook="restart-service",
                correlation_key=f"{host}/app/slot-test-{n}",
            ),
            datetime.now(UTC),
            actor="test",
        )[0]
        for n in (1, 2)
    ]
    with ThreadPoolExecutor(2) as pool:
        states = list(pool.map(incident_restoration, [i.number for i in incidents]))
    assert states == ["Resolved", "Resolved"]
    (_, a_end), (b_start, _) = sorted(window(i.id) for i in incidents)
    assert a_end <= b_start, "the second restoration acted while the first held the host"
