"""The problem review report as markdown, with its bar chart drawn as a small SVG.

Pure functions of the records and the time, so the review flow publishes exactly what the
tests read. The chart is plain SVG text (no plotting library), embedded as a data URI.
"""

from __future__ import annotations

import base64
import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from xml.sax.saxutils import escape

from opsflow.itsm.problems import KnownError, Problem, Recurrence
from opsflow.itsm.records import Incident
from opsflow.itsm.releases import Release

TOP = 10
"""Rows in the recurring-symptoms table and bars in the chart."""

BREACHES_LISTED = 10


@dataclass(frozen=True)
class Bar:
    """One bar of the chart: a label, a value, and whether it is over the threshold."""

    label: str
    value: int
    alert: bool = False


@dataclass(frozen=True)
class ReviewInput:
    """Everything the report shows, as read after the review acted."""

    now: datetime
    window_days: int
    threshold: int
    incidents: Sequence[Incident]
    recurrences: Sequence[Recurrence]
    problems: dict[int, Problem]
    known_errors: Sequence[KnownError]
    opened: Sequence[int] = ()
    linked: dict[int, Sequence[int]] = field(default_factory=dict)
    releases: Sequence[Release] = ()
    """Releases in the window that incidents were opened after."""


def bar_chart_svg(bars: Sequence[Bar], title: str, marker: float | None = None) -> str:
    """A horizontal bar chart as SVG; `marker` draws a dashed line at that value (a threshold)."""
    row, label_w, chart_w, top = 26, 230, 360, 34
    width = label_w + chart_w + 60
    height = top + row * max(1, len(bars)) + 16
    peak = max([b.value for b in bars] + [marker or 0, 1])
    scale = chart_w / peak
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="8" y="20" font-size="14" font-weight="bold">{escape(title)}</text>',
    ]
    if not bars:
        parts.append(f'<text x="8" y="{top + 16}" fill="#555555">no incidents in the window</text>')
    for index, bar in enumerate(bars):
        y = top + index * row
        length = max(1.0, bar.value * scale)
        colour = "#c0392b" if bar.alert else "#5b7fa6"
        label = bar.label if len(bar.label) <= 34 else bar.label[:33] + "…"
        parts += [
            f'<text x="{label_w - 8}" y="{y + 16}" text-anchor="end">{escape(label)}</text>',
            f'<rect x="{label_w}" y="{y + 4}" width="{length:.1f}" height="{row - 8}" '
            f'fill="{colour}"/>',
            f'<text x="{label_w + length + 6:.1f}" y="{y + 16}">{bar.value}</text>',
        ]
    if marker is not None and bars:
        x = label_w + marker * scale
        parts += [
            f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{height - 10}" '
            'stroke="#333333" stroke-dasharray="4 3"/>',
            f'<text x="{x + 3:.1f}" y="{top - 6}" fill="#333333">threshold {marker:g}</text>',
        ]
    parts.append("</svg>")
    return "\n".join(parts)


def svg_data_uri(svg: str) -> str:
    """The SVG as a base64 data URI, for markdown images and Prefect image artifacts."""
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()


def recurrence_chart(review: ReviewInput) -> str:
    """The chart of the top recurring symptoms in the window, the threshold marked."""
    bars = [
        Bar(
            f"{r.service} / {r.symptom}",
            len(r.incident_ids),
            len(r.incident_ids) >= review.threshold,
        )
        for r in review.recurrences[:TOP]
    ]
    return bar_chart_svg(
        bars, f"Incidents per service and symptom, last {review.window_days} days", review.threshold
    )


def duration(seconds: float) -> str:
    """A duration for people: 42 s, 3.5 min, 2.1 h, 1.5 d."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    if seconds < 36 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")[:200]


def _problem_cell(recurrence: Recurrence, review: ReviewInput) -> str:
    by_id = {i.id: i for i in review.incidents}
    linked = (by_id[i].problem_id for i in recurrence.incident_ids)
    ids = Counter(problem_id for problem_id in linked if problem_id is not None)
    if not ids:
        return "-"
    cells = []
    for problem_id, _ in ids.most_common():
        problem = review.problems.get(problem_id)
        cells.append(f"{problem.number} ({problem.state})" if problem else str(problem_id))
    return ", ".join(cells)


def render_review(review: ReviewInput) -> str:
    """Markdown for the review artifact: actions, recurring symptoms with chart, service load,
    time to restore and SLA breaches per priority, known errors and how well they work."""
    incidents = review.incidents
    numbers = {i.id: i.number for i in incidents}
    recurring = sum(1 for r in review.recurrences if len(r.incident_ids) >= review.threshold)
    lines = [
        f"# Problem review {review.now:%Y-%m-%d %H:%M} UTC",
        "",
        f"Window: the last {review.window_days} days; a symptom of one service seen "
        f"{review.threshold} times or more opens a problem. {len(incidents)} incidents in the "
        f"window, {recurring} recurring symptoms.",
        "",
        "## Problems opened or updated in this review",
        "",
    ]
    if review.linked:
        lines += ["| problem | state | service / symptom | incidents linked now | all incidents |"]
        lines += ["|---|---|---|---|---|"]
        for problem_id, linked in review.linked.items():
            problem = review.problems[problem_id]
            opened = " (new)" if problem_id in review.opened else ""
            now_linked = ", ".join(numbers.get(i, str(i)) for i in linked)
            lines.append(
                f"| {problem.number}{opened} | {problem.state} | {_cell(problem.service)} / "
                f"{_cell(problem.symptom)} | {now_linked} | {len(problem.incident_ids)} |"
            )
    else:
        lines.append(
            "Nothing to link: every recurring incident in the window is already explained by a "
            f"problem, and nothing else recurred {review.threshold} times."
        )
    lines += [
        "",
        "## Top recurring symptoms",
        "",
        "| # | service | symptom | incidents | hosts | problem |",
        "|---|---|---|---|---|---|",
    ]
    by_id = {i.id: i for i in incidents}
    for rank, recurrence in enumerate(review.recurrences[:TOP], start=1):
        hosts = sorted({by_id[i].host or "-" for i in recurrence.incident_ids})
        lines.append(
            f"| {rank} | {_cell(recurrence.service)} | {_cell(recurrence.symptom)} | "
            f"{len(recurrence.incident_ids)} | {_cell(', '.join(hosts))} | "
            f"{_problem_cell(recurrence, review)} |"
        )
    lines += [
        "",
        f"![Incidents per service and symptom]({svg_data_uri(recurrence_chart(review))})",
        "",
        *_per_service(incidents),
        *_restore_times(incidents),
        *_breaches(incidents, review.now),
        *_known_errors(review.known_errors),
        *_releases(review.releases),
    ]
    return "\n".join(lines) + "\n"


def _per_service(incidents: Sequence[Incident]) -> list[str]:
    rows: dict[str, Counter[str]] = defaultdict(Counter)
    for incident in incidents:
        counts = rows[incident.service or "-"]
        counts["total"] += 1
        counts["open" if incident.is_open else incident.state.lower()] += 1
        if incident.resolution_code:
            counts[incident.resolution_code] += 1
    lines = [
        "## Incidents per service",
        "",
        "| service | incidents | open | resolved | closed | canceled | auto-remediated "
        "| workaround | manual |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for service, c in sorted(rows.items(), key=lambda item: (-item[1]["total"], item[0])):
        lines.append(
            f"| {_cell(service)} | {c['total']} | {c['open']} | {c['resolved']} | {c['closed']} | "
            f"{c['canceled']} | {c['auto-remediated']} | {c['workaround']} | {c['manual']} |"
        )
    if not rows:
        lines.append("| - | 0 | 0 | 0 | 0 | 0 | 0 | 0 | 0 |")
    return [*lines, ""]


def _restore_times(incidents: Sequence[Incident]) -> list[str]:
    times: dict[int, list[float]] = defaultdict(list)
    for incident in incidents:
        if incident.time_to_restore_s is not None:
            times[incident.priority].append(incident.time_to_restore_s)
    lines = [
        "## Time to restore per priority",
        "",
        "| priority | restored | median | 90th percentile | longest |",
        "|---|---|---|---|---|",
    ]
    for level in range(1, 6):
        values = times.get(level)
        if values:
            lines.append(
                f"| P{level} | {len(values)} | {duration(statistics.median(values))} | "
                f"{duration(_percentile(values, 0.9))} | {duration(max(values))} |"
            )
        else:
            lines.append(f"| P{level} | 0 | - | - | - |")
    return [*lines, ""]


def _breaches(incidents: Sequence[Incident], now: datetime) -> list[str]:
    per_priority: dict[int, Counter[str]] = defaultdict(Counter)
    breached: list[tuple[Incident, list[str]]] = []
    for incident in incidents:
        counts = per_priority[incident.priority]
        counts["total"] += 1
        missed = [k for k, v in incident.sla_breaches(now).items() if v]
        for kind in missed:
            counts[kind] += 1
        if missed:
            breached.append((incident, missed))
    lines = [
        "## SLA breaches",
        "",
        "| priority | incidents | response missed | resolution missed |",
        "|---|---|---|---|",
    ]
    for level in range(1, 6):
        c = per_priority.get(level, Counter())
        lines.append(f"| P{level} | {c['total']} | {c['response']} | {c['resolution']} |")
    lines.append("")
    if breached:
        lines += ["| incident | P | CI | state | missed |", "|---|---|---|---|---|"]
        for incident, missed in breached[:BREACHES_LISTED]:
            lines.append(
                f"| {incident.number} | P{incident.priority} | {_cell(incident.service or '-')}@"
                f"{_cell(incident.host or '-')} | {incident.state} | {', '.join(missed)} |"
            )
        if len(breached) > BREACHES_LISTED:
            lines.append(f"\n…and {len(breached) - BREACHES_LISTED} more.")
    else:
        lines.append("No incident in the window missed its response or resolution target.")
    return [*lines, ""]


def _known_errors(known_errors: Sequence[KnownError]) -> list[str]:
    lines = ["## Known errors", ""]
    if not known_errors:
        return [*lines, "No known errors recorded.", ""]
    lines += [
        "| known error | signature | workaround | applied | worked | success |",
        "|---|---|---|---|---|---|",
    ]
    for ke in known_errors:
        signature = f"{ke.service} / {ke.symptom}" + (f" on {ke.host}" if ke.host else "")
        if ke.labels:
            signature += " " + ", ".join(f"{k}={v}" for k, v in sorted(ke.labels.items()))
        rate = f"{ke.times_worked / ke.times_applied:.0%}" if ke.times_applied else "-"
        number = ke.number + ("" if ke.active else " (retired)")
        lines.append(
            f"| {number} | {_cell(signature)} | {ke.workaround} | {ke.times_applied} | "
            f"{ke.times_worked} | {rate} |"
        )
    return [*lines, ""]


def _releases(releases: Sequence[Release]) -> list[str]:
    """Incidents per release: those opened on a service within the window after a release."""
    lines = ["", "## Incidents after releases", ""]
    if not releases:
        return [*lines, "No incident was opened on a service just after a release of it."]
    lines += ["| release | service | from -> to | state | incidents |", "|---|---|---|---|---|"]
    for release in releases:
        lines.append(
            f"| {release.number} | {_cell(release.service)} | "
            f"{_cell(release.from_version or '?')} -> {_cell(release.to_version)} | "
            f"{release.state} | {len(release.incidents)}: {_cell(', '.join(release.incidents))} |"
        )
    return lines
