"""Alert-derived text through the real `opsflow` CLI and the timeline artifact: printed as typed,
in tables that keep what people scan whole at the widths terminals have.

Symptoms, hosts, summaries and worklogs come from alerts and people; rich markup or markdown
in them must neither crash the CLI nor style, link or split what is shown.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from rich.cells import cell_len
from rich.console import Console
from typer.testing import CliRunner

from opsflow.cli.main import app as opsflow
from opsflow.cli.output import Column, Short, fitted_table
from opsflow.desk.app import create_app
from opsflow.desk.estate import EstateCache
from opsflow.itsm.records import IncidentCreate, IncidentUpdate
from opsflow.itsm.store.records import Records
from opsflow.itsm.timeline import render_timeline
from tests.support.factories import TOKENS
from tests.support.serving import serve_app

HOSTILE = {
    "host": "web[/]1",
    "service": "app[bold]",
    "symptom": "[/]down | [bold]x](javascript:alert(1))",
    "summary": "disk [red]full[/] :x: | <b>now</b> [link](javascript:alert(1))",
}
WORKLOG = "restarted [/] by [bold]hand[/bold] | ok"
LONG_CI = "checkout-api@web-prod-eu-west-1.example.com"
ORDINARY = [  # (host, service, symptom, impact, urgency, opened this long ago)
    ("lab02", "app", "service-down", 2, 2, timedelta(minutes=3)),
    ("web-prod-eu-west-1.example.com", "checkout-api", "HighErrorRate", 1, 1, timedelta(hours=5)),
    ("lab05", None, "disk-full", 3, 2, timedelta(days=2)),
]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, desk_estate: Path) -> Iterator[tuple]:
    """A desk served by uvicorn over a SQLite file, holding one incident with hostile text."""
    store = Records(f"sqlite:///{tmp_path_factory.mktemp('cli-desk') / 'records.db'}")
    now = datetime.now(UTC)
    incident, _ = store.correlation.open_or_correlate(
        IncidentCreate(**HOSTILE, impact=2, urgency=2), now, actor="triage"
    )
    store.worklog.add(incident.id, "restoration[/]", WORKLOG, now)
    for host, service, symptom, impact, urgency, ago in ORDINARY:
        create = IncidentCreate(
            host=host, service=service, symptom=symptom, summary=symptom, impact=impact,
            urgency=urgency, assignment_group="ops",
        )  # fmt: skip
        store.correlation.open_or_correlate(create, now - ago, actor="triage", now=now - ago)
    store.incidents.update(
        "INC0000002", IncidentUpdate(state="In Progress", assigned_to="alice"), "alice", now
    )
    with serve_app(create_app(store, EstateCache(desk_estate))) as url:
        yield url, store, store.incidents.get(incident.id)


def run_cli(monkeypatch: pytest.MonkeyPatch, url: str, *args: str, columns: int = 400) -> str:
    """The CLI's output at a terminal `columns` wide (400: one line per row, texts whole)."""
    monkeypatch.setenv("OPSFLOW_DESK_URL", url)
    monkeypatch.setenv("OPSFLOW_TOKEN", TOKENS["olga"])
    monkeypatch.setenv("COLUMNS", str(columns))
    result = CliRunner().invoke(opsflow, list(args))
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return result.output


def test_incident_list_and_show_print_markup_literally(served, monkeypatch) -> None:
    url, _, incident = served
    listed = run_cli(monkeypatch, url, "incident", "list")
    assert incident.number in listed
    assert HOSTILE["symptom"] in listed
    assert f"{HOSTILE['service']}@{HOSTILE['host']}" in listed
    shown = run_cli(monkeypatch, url, "incident", "show", incident.number)
    assert HOSTILE["symptom"] in shown
    assert f"restoration[/]  {WORKLOG}" in shown


def test_listing_asks_the_desk_for_the_filters_given(served, monkeypatch) -> None:
    url, store, _ = served
    listed = json.loads(run_cli(monkeypatch, url, "incident", "list", "--json"))
    assert [i["number"] for i in listed] == [i.number for i in store.incidents.list(limit=50)]
    on_lab02 = json.loads(
        run_cli(monkeypatch, url, "incident", "list", "--host", "lab02", "--json")
    )
    assert [i["number"] for i in on_lab02] == ["INC0000002"]
    args = ("incident", "list", "--state", "In Progress", "--limit", "1", "--json")
    assert [i["assigned_to"] for i in json.loads(run_cli(monkeypatch, url, *args))] == ["alice"]
    shown = run_cli(monkeypatch, url, "incident", "show", "INC0000002")
    assert shown.startswith("┏") and "app@lab02" in shown  # the table people read, not JSON


def test_timeline_markdown_escapes_alert_text(served) -> None:
    _, store, incident = served
    markdown = render_timeline(
        incident, store.worklog.entries(incident.id), store.audit.trail("incident", incident.id)
    )
    unescaped = re.compile(r"(?<!\\)[\[\]<>]")  # a link or a tag needs one
    for line in markdown.splitlines():
        if line.startswith("|"):
            cells = re.split(r"(?<!\\)\|", line)[1:-1]
            assert len(cells) in (2, 3), f"a cell was split: {line}"
            assert not any(unescaped.search(cell) for cell in cells), line
    assert "](javascript:" not in markdown
    assert "<b>" not in markdown
    title = markdown.splitlines()[0]
    assert not unescaped.search(title.removeprefix(f"# {incident.number}: ")), title


def read_table(output: str) -> list[dict[str, str]]:
    """A rich table's records as printed: each column's text, its folded lines joined (a line
    wrapped at a space loses it: compare texts with `squeezed`). A record starts at a number."""
    lines = output.splitlines()
    header = next(line for line in lines if line.startswith("┃"))
    names = [cell.strip() for cell in header.split("┃")[1:-1]]
    records: list[dict[str, str]] = []
    for line in lines:
        if not line.startswith("│"):
            continue
        cells = [cell.strip() for cell in line.split("│")[1:-1]]
        if re.match(r"[A-Z]{3}\d", cells[0]) or not records:
            records.append(dict.fromkeys(names, ""))
        for name, cell in zip(names, cells, strict=True):
            records[-1][name] += cell
    return records


def squeezed(text: str) -> str:
    return text.replace(" ", "")


@pytest.mark.parametrize("columns", [80, 120])
def test_incident_list_keeps_what_people_scan_whole(served, monkeypatch, columns: int) -> None:
    url, store, _ = served
    listed = run_cli(monkeypatch, url, "incident", "list", columns=columns)
    assert max(cell_len(line) for line in listed.splitlines()) <= columns
    records = read_table(listed)
    incidents = {i.number: i for i in store.incidents.list(limit=50)}
    assert [r["number"] for r in records] == list(incidents)
    for record in records:
        incident = incidents[record["number"]]
        assert record["state"] == incident.state
        assert record["P"] == f"P{incident.priority}"
        assert record["CI"] == squeezed(f"{incident.service or '-'}@{incident.host or '-'}")
        assert squeezed(record["symptom"]) == squeezed(incident.symptom)
    rows = {r["number"]: r for r in records}
    assert rows["INC0000002"]["CI"] == "app@lab02"  # the cut this fixes: `app@…`, `serv…`
    assert rows["INC0000002"]["symptom"] == "service-down"
    assert rows["INC0000003"]["CI"] == LONG_CI  # wrapped over lines, never cut
    opened = store.incidents.get("INC0000003").opened_at
    if columns == 120:  # room for every column, some times shortened
        assert set(records[0]) == {"number", "P", "state", "CI", "symptom", "events", "opened",
                                   "assigned"}  # fmt: skip
        assert rows["INC0000002"]["assigned"] == "alice"
        assert rows["INC0000003"]["opened"] == "5h ago"
    else:  # the event count, the assignee and the time give way
        assert set(records[0]) == {"number", "P", "state", "CI", "symptom"}
    assert f"{opened:%Y-%m-%d %H:%M}" in run_cli(monkeypatch, url, "incident", "list", columns=160)


def test_tables_never_cut_a_number_at_any_width() -> None:
    columns = [
        Column("number", whole=True),
        Column("state", whole=True),
        Column("what", min_width=16),
        Column("when", whole=True, drop=1),
        Column("who", drop=2),
    ]
    rows = [
        [f"REQ{n:07d}", state, what * n, Short("2026-12-01 10:00", f"{n}h ago"), "someone"]
        for n, (state, what) in enumerate(
            [("awaiting-approval", "restart "), ("fulfilled", "x"), ("New", "diagnostic-bundle ")],
            start=1,
        )
    ]
    for width in range(30, 161, 5):
        console = Console(width=width, record=True, markup=False)
        console.print(fitted_table(columns, rows, width=width))
        printed = console.export_text()
        assert max(cell_len(line) for line in printed.splitlines()) <= width, printed
        records = read_table(printed)
        assert [r["number"] for r in records] == [row[0] for row in rows], printed
        assert [squeezed(r["what"]) for r in records] == [squeezed(row[2]) for row in rows]
        if width >= 60:  # where the whole columns fit, they are on one line
            assert all(f"│ {row[0]} │" in printed for row in rows), printed
