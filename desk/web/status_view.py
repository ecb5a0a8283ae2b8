"""The status view of the desk's page, for operators: pictures of the records' state, drawn
on the server (`desk.web.charts`) and fetched by the page with the operator's token.

Its figures come from the bounded queries of `itsm.store.metrics`, so a view costs the same
whatever the number of incidents.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse

from opsflow.desk.deps import Operator, Records
from opsflow.desk.web.charts import open_incidents_chart, restore_time_chart
from opsflow.itsm.store.metrics import status_figures

router = APIRouter()

STATUS_DAYS = 14
"""How many days of time to restore the view shows by default."""


@router.get("/web/status", response_class=HTMLResponse, include_in_schema=False)
def status_view(
    person: Operator,
    store: Records,
    days: Annotated[int, Query(ge=1, le=90)] = STATUS_DAYS,
) -> HTMLResponse:
    """An HTML fragment: open incidents by priority and the mean time to restore of each of
    the last `days` days, as inline SVG bar charts."""
    figures = status_figures(store.db, datetime.now(UTC), days)
    html = (
        '<figure id="open-incidents"><figcaption>Open incidents by priority</figcaption>'
        f"{open_incidents_chart(figures.open_incidents)}</figure>"
        '<figure id="time-to-restore"><figcaption>Mean time to restore per day '
        f"(number restored above each bar), last {days} days</figcaption>"
        f"{restore_time_chart(figures.restored)}</figure>"
    )
    return HTMLResponse(html)
