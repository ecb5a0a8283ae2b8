"""The problem review report: sections, numbers and a well-formed SVG chart."""

from __future__ import annotations

import base64
import re
from datetime import timedelta
from xml.etree import ElementTree

from opsflow.itsm.problem_report import Bar, ReviewInput, bar_chart_svg, duration, render_review
from opsflow.itsm.problems import find_recurrences
from tests.support.factories import NOW, failure


def review(store) -> ReviewInput:
    ids = [failure(store, host=f"web{i % 2 + 1}", at=NOW + timedelta(hours=i)).id for i in range(3)]
    failure(store, service="db", symptom="disk-full", at=NOW, resolve_after=timedelta(hours=30))
    failure(
        store, service="db", symptom="disk-full", at=NOW + timedelta(hours=1), resolve_after=None
    )
    change = store.problems.record_recurrence("app", "service-down", ids, "problem-review", NOW)
    incidents = store.incidents.opened_since(NOW - timedelta(days=7))
    return ReviewInput(
        now=NOW + timedelta(days=1),
        window_days=7,
        threshold=3,
        incidents=incidents,
        recurrences=find_recurrences(incidents, store.problems.list_open(), 3),
        problems={change.problem.id: change.problem},
        known_errors=[],
        opened=(change.problem.id,),
        linked={change.problem.id: change.linked},
    )


def test_report_sections_and_numbers(store) -> None:
    markdown = render_review(review(store))
    assert (
        "| PRB0000001 (new) | New | app / service-down | INC0000001, INC0000002, INC0000003 | 3 |"
        in markdown
    )
    assert "| 1 | app | service-down | 3 | web1, web2 | PRB0000001 (New) |" in markdown
    assert "| 2 | db | disk-full | 2 | web1 | - |" in markdown
    assert "| app | 3 | 0 | 3 | 0 | 0 | 3 | 0 | 0 |" in markdown
    # P2 is due a response in 30 min and a resolution in 4 h: the incident first touched
    # when resolved after 30 h missed both, as did the one still New a day later.
    assert "| P2 | 4 | 5.0 min | 30.0 h | 30.0 h |" in markdown
    assert "| P2 | 5 | 2 | 2 |" in markdown
    assert "| INC0000004 | P2 | db@web1 | Resolved | response, resolution |" in markdown
    assert "| INC0000005 | P2 | db@web1 | New | response, resolution |" in markdown
    assert "No known errors recorded." in markdown


def test_chart_is_embedded_and_well_formed(store) -> None:
    markdown = render_review(review(store))
    encoded = re.search(r"!\[[^]]*\]\(data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)\)", markdown)
    assert encoded, "no embedded chart"
    svg = ElementTree.fromstring(base64.b64decode(encoded.group(1)))  # noqa: S314 (our own SVG)
    texts = [t.text for t in svg.iter("{http://www.w3.org/2000/svg}text")]
    assert "app / service-down" in texts and "db / disk-full" in texts
    bars = [r for r in svg.iter("{http://www.w3.org/2000/svg}rect") if r.get("fill") == "#c0392b"]
    assert len(bars) == 1, "only app / service-down reaches the threshold"


def test_chart_escapes_labels_and_handles_no_data() -> None:
    svg = bar_chart_svg([Bar("<a&b>", 2, True)], "t & t", marker=3)
    assert "&lt;a&amp;b&gt;" in svg and "t &amp; t" in svg
    ElementTree.fromstring(svg)  # noqa: S314 (our own SVG)
    empty = bar_chart_svg([], "nothing")
    assert "no incidents in the window" in empty


def test_durations_read_well() -> None:
    assert [duration(s) for s in (4.2, 300, 7200, 200_000)] == ["4 s", "5.0 min", "2.0 h", "2.3 d"]
