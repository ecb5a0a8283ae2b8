"""An incident's story as markdown: its record, then every change and note in time order."""

from __future__ import annotations

from datetime import datetime

from opsflow.itsm.markdown import md_text
from opsflow.itsm.records import AuditEntry, Incident, WorklogEntry


def render_timeline(
    incident: Incident, worklog: list[WorklogEntry], audit: list[AuditEntry]
) -> str:
    """Markdown for the incident's Prefect artifact: summary table, then the timeline."""
    ttr = f"{incident.time_to_restore_s:.1f} s" if incident.time_to_restore_s is not None else "-"
    lines = [
        f"# {incident.number}: {md_text(incident.summary)}",
        "",
        "| field | value |",
        "|---|---|",
        f"| CI | {md_text(incident.service or '-')} on {md_text(incident.host or '-')} |",
        f"| symptom | {md_text(incident.symptom)} |",
        f"| priority | P{incident.priority} "
        f"(impact {incident.impact}, urgency {incident.urgency}) |",
        f"| state | **{incident.state}** |",
        f"| assigned | {md_text(incident.assignment_group or '-')} / "
        f"{md_text(incident.assigned_to or '-')} |",
        f"| events correlated | {incident.event_count} |",
        f"| time to restore | {ttr} |",
        f"| resolution | {incident.resolution_code or '-'}: "
        f"{md_text(incident.resolution_notes or '-')} |",
        "",
        "## Timeline",
        "",
        "| time (UTC) | who | what |",
        "|---|---|---|",
    ]
    entries: list[tuple[datetime, str, str]] = []
    for entry in audit:
        if entry.action == "incident.worklog_added":
            continue
        before = (entry.before or {}).get("state")
        after = (entry.after or {}).get("state")
        what = entry.action + (f": {before} → {after}" if before != after and after else "")
        entries.append((entry.at, entry.actor, what))
    entries += [(w.at, w.author, w.text) for w in worklog]
    for at, who, what in sorted(entries, key=lambda e: e[0]):
        stamp = f"{at:%Y-%m-%d %H:%M:%S.%f}"[:-3]
        lines.append(f"| {stamp} | {md_text(who)} | {md_text(what)} |")
    return "\n".join(lines) + "\n"
