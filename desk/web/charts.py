"""The status view's pictures, drawn on the server as inline SVG: nothing fetched, no script.

Bar charts only, each bar a `rect.bar` carrying its figure in `data-*` attributes, so that
a person reads the picture and a test (or a screen reader, through `aria-label`) reads the
numbers it was drawn from. Every text drawn is made from numbers and dates, escaped anyway.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from opsflow.itsm.store.metrics import RestoredDay

PRIORITY_COLOURS = {1: "#b3261e", 2: "#e8710a", 3: "#f2b705", 4: "#2f6fde", 5: "#6b7383"}
"""P1 red to P5 grey, as people expect urgency to look."""
RESTORE_COLOUR = "#1d7a3a"
PLOT_HEIGHT = 140
"""Pixels of the tallest bar; every other bar is in proportion to it."""
TOP, BOTTOM, LEFT = 24, 36, 44
"""Room above the bars (their labels), below them (the axis labels) and left (the scale)."""


@dataclass(frozen=True)
class Bar:
    """One bar: its value (None: nothing to draw), the label under it, the label above it,
    and the `data-*` attributes that carry its figures."""

    value: float | None
    label: str
    caption: str
    data: dict[str, str]


def open_incidents_chart(counts: dict[int, int]) -> str:
    """Open incidents at each priority, P1 to P5, as bars."""
    bars = [
        Bar(
            float(counts.get(level, 0)),
            f"P{level}",
            str(counts.get(level, 0)),
            {"priority": f"P{level}", "count": str(counts.get(level, 0))},
        )
        for level in range(1, 6)
    ]
    summary = ", ".join(f"P{level} {counts.get(level, 0)}" for level in range(1, 6))
    return _bar_chart(
        "open-incidents",
        f"Open incidents by priority: {summary}",
        bars,
        [PRIORITY_COLOURS[level] for level in range(1, 6)],
        bar_width=44,
        scale_label="incidents",
    )


def restore_time_chart(days: Sequence[RestoredDay]) -> str:
    """The mean time to restore of each day's restored incidents, as bars; how many were
    restored above each bar."""
    longest = max((d.mean_s for d in days if d.mean_s is not None), default=0.0)
    unit, per_unit = _unit(longest)
    bars = [
        Bar(
            None if d.mean_s is None else d.mean_s / per_unit,
            f"{d.day:%b} {d.day.day}",
            str(d.count) if d.count else "",
            {
                "day": d.day.isoformat(),
                "count": str(d.count),
                "mean-seconds": "" if d.mean_s is None else f"{d.mean_s:.1f}",
            },
        )
        for d in days
    ]
    restored = sum(d.count for d in days)
    return _bar_chart(
        "time-to-restore",
        f"Mean time to restore per day over the last {len(days)} days, in {unit}; "
        f"{restored} incidents restored",
        bars,
        [RESTORE_COLOUR] * len(bars),
        bar_width=36,
        scale_label=unit,
    )


def _unit(seconds: float) -> tuple[str, float]:
    """The unit that shows `seconds` as a number people read at a glance, and its size."""
    if seconds < 120:
        return "seconds", 1.0
    if seconds < 7200:
        return "minutes", 60.0
    return "hours", 3600.0


def _bar_chart(
    name: str,
    title: str,
    bars: Sequence[Bar],
    colours: Sequence[str],
    bar_width: int,
    scale_label: str,
) -> str:
    """An SVG bar chart: bars in proportion to the largest value, each with its captions."""
    top_value = max((b.value for b in bars if b.value is not None), default=0.0)
    slot = bar_width + 10
    width = LEFT + slot * len(bars) + 10
    height = TOP + PLOT_HEIGHT + BOTTOM
    base = TOP + PLOT_HEIGHT
    parts = [
        f'<svg class="chart" id="{escape(name)}-chart" xmlns="http://www.w3.org/2000/svg" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}"><title>{escape(title)}</title>',
        f'<line x1="{LEFT}" y1="{base}" x2="{width - 5}" y2="{base}" stroke="#9aa1ad"/>',
        f'<text x="{LEFT - 6}" y="{TOP + 4}" text-anchor="end" font-size="11">'
        f"{escape(_number(top_value))}</text>",
        f'<text x="{LEFT - 6}" y="{base}" text-anchor="end" font-size="11">0</text>',
        f'<text x="4" y="{TOP - 10}" font-size="11" fill="#4a5263">{escape(scale_label)}</text>',
    ]
    for i, (bar, colour) in enumerate(zip(bars, colours, strict=True)):
        x = LEFT + 5 + i * slot
        size = 0.0 if not bar.value or not top_value else PLOT_HEIGHT * bar.value / top_value
        data = " ".join(f'data-{key}="{escape(value)}"' for key, value in bar.data.items())
        centre = x + bar_width / 2
        parts += [
            f'<rect class="bar" {data} x="{x}" y="{base - size:.2f}" width="{bar_width}" '
            f'height="{size:.2f}" fill="{colour}"/>',
            f'<text x="{centre}" y="{base - size - 5:.2f}" text-anchor="middle" '
            f'font-size="12">{escape(bar.caption)}</text>',
            f'<text x="{centre}" y="{base + 16}" text-anchor="middle" font-size="11">'
            f"{escape(bar.label)}</text>",
        ]
    parts.append("</svg>")
    return "".join(parts)


def _number(value: float) -> str:
    """A scale figure: whole numbers as such, others to one decimal."""
    return f"{value:.0f}" if value == int(value) else f"{value:.1f}"
