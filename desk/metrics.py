"""The desk's `/metrics` in Prometheus text format, computed from the store at scrape time."""

from __future__ import annotations

from datetime import UTC, datetime

from opsflow.itsm.store.records import Records

RESTORE_BUCKETS_S = (1, 2, 5, 10, 30, 60, 300, 900, 3600, 14400)


def render_metrics(store: Records) -> str:
    """Events received by class, triage's backlog and failures, open incidents by priority,
    and a time-to-restore histogram."""
    lines = [
        "# HELP opsflow_events_received_total Events stored by the desk, by triage class"
        ' ("pending": not triaged yet; "failed": triage could not handle them).',
        "# TYPE opsflow_events_received_total counter",
    ]
    for event_class, count in sorted(store.events.counts_by_class().items()):
        lines.append(f'opsflow_events_received_total{{class="{event_class}"}} {count}')
    backlog = store.events.backlog()
    oldest = backlog.oldest_received_at
    age = (datetime.now(UTC) - oldest).total_seconds() if oldest is not None else 0.0
    lines += [
        "# HELP opsflow_events_failed Events triage marked failed (each with its reason).",
        "# TYPE opsflow_events_failed gauge",
        f"opsflow_events_failed {backlog.failed}",
        "# HELP opsflow_triage_pending_events Events stored and not triaged yet.",
        "# TYPE opsflow_triage_pending_events gauge",
        f"opsflow_triage_pending_events {backlog.pending}",
        "# HELP opsflow_triage_oldest_pending_seconds Age of the oldest event not triaged yet.",
        "# TYPE opsflow_triage_oldest_pending_seconds gauge",
        f"opsflow_triage_oldest_pending_seconds {max(0.0, age):.1f}",
    ]
    lines += [
        "# HELP opsflow_incidents_open Incidents not yet resolved, by priority.",
        "# TYPE opsflow_incidents_open gauge",
    ]
    open_by_priority = store.incidents.count_open_by_priority()
    for priority in range(1, 6):
        lines.append(
            f'opsflow_incidents_open{{priority="P{priority}"}} {open_by_priority.get(priority, 0)}'
        )
    times = store.incidents.restore_times()
    lines += [
        "# HELP opsflow_time_to_restore_seconds Time from incident opened to service restored.",
        "# TYPE opsflow_time_to_restore_seconds histogram",
    ]
    for bound in RESTORE_BUCKETS_S:
        count = sum(1 for t in times if t <= bound)
        lines.append(f'opsflow_time_to_restore_seconds_bucket{{le="{bound}"}} {count}')
    lines.append(f'opsflow_time_to_restore_seconds_bucket{{le="+Inf"}} {len(times)}')
    lines.append(f"opsflow_time_to_restore_seconds_sum {sum(times):.3f}")
    lines.append(f"opsflow_time_to_restore_seconds_count {len(times)}")
    return "\n".join(lines) + "\n"
