"""Alert-derived text through the real `opsflow` CLI and the timeline artifact: printed as typed.

Symptoms, hosts, summaries and worklogs come from alerts and people; rich markup or markdown
in them must neither crash the CLI nor style, link or split what is shown.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import uvicorn
from typer.testing import CliRunner

from opsflow.cli.main import app as opsflow
from opsflow.desk.app import create_app
from opsflow.desk.estate import EstateCache
from opsflow.itsm.records import IncidentCreate
from opsflow.itsm.store.records import Records
from opsflow.itsm.timeline import render_timeline
from tests.desk.conftest import TOKENS
from tests.support import free_port, wait_for

HOSTILE = {
    "host": "web[/]1",
    "service": "app[bold]",
    "symptom": "[/]down | [bold]x](javascript:alert(1))",
    "summary": "disk [red]full[/] :x: | <b>now</b> [link](javascript:alert(1))",
}
WORKLOG = "restarted [/] by [bold]hand[/bold] | ok"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, desk_estate: Path) -> Iterator[tuple]:
    """A desk served by uvicorn over a SQLite file, holding one incident with hostile text."""
    store = Records(f"sqlite:///{tmp_path_factory.mktemp('cli-desk') / 'records.db'}")
    now = datetime.now(UTC)
    incident, _ = store.correlation.open_or_correlate(
        IncidentCreate(**HOSTILE, impact=2, urgency=2), now, actor="triage"
    )
    store.worklog.add(incident.id, "restoration[/]", WORKLOG, now)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(store, EstateCache(desk_estate)),
            host="127.0.0.1",
            port=free_port(),
            log_level="warning",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 30, "the desk to start")
    yield f"http://127.0.0.1:{server.config.port}", store, store.incidents.get(incident.id)
    server.should_exit = True
    thread.join(30)


def run_cli(monkeypatch: pytest.MonkeyPatch, url: str, *args: str) -> str:
    monkeypatch.setenv("OPSFLOW_DESK_URL", url)
    monkeypatch.setenv("OPSFLOW_TOKEN", TOKENS["olga"])
    monkeypatch.setenv("COLUMNS", "400")  # one line per row, so the texts are found whole
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
