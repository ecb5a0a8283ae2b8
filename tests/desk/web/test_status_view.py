"""The operators' status view in a real headless Chromium: the pictures drawn are the records'.

A desk over its own SQLite records, seeded with open incidents at known priorities and
incidents restored on known days in known times; the page's bar charts, as Chromium lays
them out and as its screenshot shows them, must have exactly those proportions.
"""

from __future__ import annotations

import struct
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from opsflow.desk.app import create_app
from opsflow.desk.estate import EstateCache
from opsflow.inventory.models import token_sha256
from opsflow.itsm.records import IncidentCreate, IncidentUpdate
from opsflow.itsm.store.records import Records
from tests.support.serving import ServedDesk, serve_app

TOKENS = {"olga": "olga-operator-token", "rita": "rita-requester-token"}
OPEN = {1: 3, 2: 1, 3: 0, 4: 2, 5: 0}
"""Open incidents seeded at each priority."""
IMPACT_URGENCY = {1: (1, 1), 2: (1, 2), 4: (2, 3)}
RESTORED = {0: [60.0, 180.0], 2: [600.0], 5: [300.0], 20: [30.0]}
"""Times to restore (seconds) of incidents restored so many days ago; 20 days is outside the
view's 14 and must not show."""
RED = (0xB3, 0x26, 0x1E)
"""The P1 bar's colour."""


@pytest.fixture(scope="module")
def status_desk(tmp_path_factory: pytest.TempPathFactory):
    """A desk served by uvicorn over seeded SQLite records, with an operator and a requester."""
    directory = tmp_path_factory.mktemp("status-desk")
    estate = directory / "estate"
    estate.mkdir()
    people = [
        {"name": "olga", "roles": ["operator"], "token_sha256": token_sha256(TOKENS["olga"])},
        {"name": "rita", "roles": ["requester"], "token_sha256": token_sha256(TOKENS["rita"])},
    ]
    (estate / "people.yaml").write_text(yaml.safe_dump({"people": people}))
    for name in ("hosts", "services", "rules"):
        (estate / f"{name}.yaml").write_text(yaml.safe_dump({name: []}))
    store = Records(f"sqlite:///{directory / 'records.db'}")
    _seed(store, datetime.now(UTC))
    app = create_app(store, EstateCache(estate))
    with serve_app(app) as url:
        yield ServedDesk(url, worker=None)


def _seed(store: Records, now: datetime) -> None:
    """Open `OPEN` incidents; restore `RESTORED`'s, each on its day (early that day, never
    in the future)."""
    for level, count in OPEN.items():
        for i in range(count):
            _open(store, level, f"open-P{level}-{i}", now)
    today = datetime.combine(now.date(), datetime.min.time(), UTC)
    early = min(timedelta(seconds=30), now - today)
    for days_ago, times in RESTORED.items():
        for i, seconds in enumerate(times):
            resolved = today - timedelta(days=days_ago) + early
            incident = _open(
                store, 4, f"restored-{days_ago}-{i}", resolved - timedelta(seconds=seconds)
            )
            store.incidents.update(
                incident.id,
                IncidentUpdate(state="Resolved", resolution_code="manual", resolution_notes="ok"),
                "test",
                resolved,
            )


def _open(store: Records, level: int, key: str, at: datetime):
    impact, urgency = IMPACT_URGENCY[level]
    incident, _ = store.correlation.open_or_correlate(
        IncidentCreate(
            service="app",
            symptom="service-down",
            summary=key,
            impact=impact,
            urgency=urgency,
            correlation_key=key,
        ),
        at,
        actor="test",
    )
    assert incident.priority == level
    return incident


def sign_in(page, desk, person: str) -> None:
    page.goto(desk.url + "/")
    page.fill("#token", TOKENS[person])
    page.click("#sign-in")
    page.wait_for_selector("#report-section:not(.hidden)")


def bars(page, chart: str) -> list[dict]:
    """The bars of `chart` as Chromium laid them out: their data and rendered box."""
    return page.eval_on_selector_all(
        f"#{chart}-chart rect.bar",
        """rects => rects.map(r => {
            const box = r.getBoundingClientRect();
            return {data: {...r.dataset}, x: box.x, y: box.y, width: box.width,
                    height: box.height};
        })""",
    )


def test_operators_see_open_incidents_and_time_to_restore_as_drawn_from_the_records(
    page, status_desk, tmp_path: Path
) -> None:
    problems: list[str] = []
    page.on("console", lambda m: m.type in ("error", "warning") and problems.append(m.text))
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on(
        "request",
        lambda r: r.url.startswith(status_desk.url) or problems.append(f"fetched {r.url}"),
    )
    page.on("response", lambda r: r.status >= 400 and problems.append(f"{r.status} {r.url}"))
    sign_in(page, status_desk, "olga")
    page.wait_for_selector("#open-incidents-chart rect.bar", state="attached")
    page.wait_for_selector("#time-to-restore-chart rect.bar", state="attached")

    by_priority = bars(page, "open-incidents")
    assert [b["data"]["priority"] for b in by_priority] == ["P1", "P2", "P3", "P4", "P5"]
    assert [int(b["data"]["count"]) for b in by_priority] == list(OPEN.values())
    tallest = max(b["height"] for b in by_priority)
    assert tallest > 100
    for bar, count in zip(by_priority, OPEN.values(), strict=True):
        assert bar["height"] == pytest.approx(tallest * count / max(OPEN.values()), abs=0.5)

    days = bars(page, "time-to-restore")
    assert len(days) == 14
    today = datetime.now(UTC).date()
    expected_days = [(today - timedelta(days=13 - i)).isoformat() for i in range(14)]
    assert [b["data"]["day"] for b in days] == expected_days
    means = {d: sum(t) / len(t) for d, t in RESTORED.items() if d < 14}
    counts = [len(RESTORED.get(13 - i, [])) for i in range(14)]
    assert [int(b["data"]["count"]) for b in days] == counts
    tallest = max(b["height"] for b in days)
    for i, bar in enumerate(days):
        mean = means.get(13 - i, 0.0)
        assert bar["height"] == pytest.approx(tallest * mean / max(means.values()), abs=0.5)
    assert "in minutes; 4 incidents restored" in page.get_attribute(
        "#time-to-restore-chart", "aria-label"
    )

    page.locator("#status-section").screenshot(path=str(tmp_path / "status.png"))
    shot = tmp_path / "open-incidents.png"
    page.locator("#open-incidents-chart").screenshot(path=str(shot))
    _, height, pixels = read_png(shot.read_bytes())
    red_rows = [y for y in range(height) if RED in pixels[y]]
    p1 = by_priority[0]
    assert len(red_rows) == pytest.approx(p1["height"], abs=1.5)
    assert problems == []


def test_the_status_view_is_for_operators_only(page, status_desk) -> None:
    sign_in(page, status_desk, "rita")
    assert page.is_hidden("#status-section")
    answer = page.request.get(
        status_desk.url + "/web/status", headers={"Authorization": f"Bearer {TOKENS['rita']}"}
    )
    assert answer.status == 403
    assert page.request.get(status_desk.url + "/web/status").status == 401


def read_png(data: bytes) -> tuple[int, int, list[list[tuple[int, int, int]]]]:
    """Width, height and RGB rows of an 8-bit, non-interlaced RGB or RGBA PNG (Chromium's
    screenshots), decoded here so the test reads the pixels Chromium drew."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, at = {}, 8
    idat = b""
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind, body = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        if kind == b"IDAT":
            idat += body
        chunks.setdefault(kind, body)
        at += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert depth == 8 and colour in (2, 6) and interlace == 0
    size = 3 if colour == 2 else 4
    raw, stride = zlib.decompress(idat), width * size
    rows, previous = [], bytearray(stride)
    for y in range(height):
        kind, line = (
            raw[y * (stride + 1)],
            bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]),
        )
        for x in range(stride):
            left = line[x - size] if x >= size else 0
            up, corner = previous[x], previous[x - size] if x >= size else 0
            if kind == 1:
                line[x] = (line[x] + left) & 0xFF
            elif kind == 2:
                line[x] = (line[x] + up) & 0xFF
            elif kind == 3:
                line[x] = (line[x] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                guess = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[x] = (line[x] + guess) & 0xFF
        rows.append([tuple(line[x : x + 3]) for x in range(0, stride, size)])
        previous = line
    return width, height, rows
