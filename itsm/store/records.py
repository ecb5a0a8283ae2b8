"""The records facade: every kind of record over one database, opened once per process.

`Records(url)` opens the database (bringing it to the newest schema) and gives each kind of
record's store over it: `records.incidents`, `records.events`, `records.problems`, ... All of
them share one engine and its pool, so one `Records` serves a whole process, from many
threads: `open_records()` is that one (per URL), for the flows, tasks, desk, worker and CLI.
"""

from __future__ import annotations

import threading

from opsflow.itsm.priority import SlaTargets
from opsflow.itsm.store.access import AccessGrants
from opsflow.itsm.store.audit import Audit
from opsflow.itsm.store.correlation import Correlator
from opsflow.itsm.store.db import Database, default_database_url
from opsflow.itsm.store.events import Events
from opsflow.itsm.store.facts import FactsHistory
from opsflow.itsm.store.incidents import Incidents
from opsflow.itsm.store.known_errors import KnownErrors
from opsflow.itsm.store.leases import Leases
from opsflow.itsm.store.maintenance import MaintenanceWindows
from opsflow.itsm.store.paging import FailedRunPages
from opsflow.itsm.store.problems import Problems
from opsflow.itsm.store.releases import Releases
from opsflow.itsm.store.remediations import Remediations
from opsflow.itsm.store.requests import Requests
from opsflow.itsm.store.worklog import Worklog


class Records:
    """The ITIL records in one database; safe to share between threads.

    Args:
        url: SQLAlchemy URL (`sqlite:///path`, `postgresql+psycopg://…`); by default
            `OPSFLOW_DATABASE_URL`, else `opsflow.db` in the opsflow home.
        sla: response and resolution targets used to set incidents' due dates.
    """

    def __init__(self, url: str | None = None, sla: SlaTargets | None = None) -> None:
        self.db = Database(url)
        self.sla = sla or SlaTargets()
        self.audit = Audit(self.db)
        self.events = Events(self.db)
        self.incidents = Incidents(self.db, self.sla)
        self.correlation = Correlator(self.db, self.sla)
        self.worklog = Worklog(self.db)
        self.remediations = Remediations(self.db)
        self.problems = Problems(self.db)
        self.known_errors = KnownErrors(self.db)
        self.requests = Requests(self.db)
        self.access = AccessGrants(self.db)
        self.releases = Releases(self.db)
        self.leases = Leases(self.db, self.incidents)
        self.maintenance = MaintenanceWindows(self.db)
        self.facts = FactsHistory(self.db)
        self.paging = FailedRunPages(self.db)


_opened: dict[str, Records] = {}
_opening = threading.Lock()


def open_records(url: str | None = None) -> Records:
    """This process's records at `url` (default: the configured database), opened on first
    use and shared: one engine and pool per database, whoever asks."""
    key = url or default_database_url()
    with _opening:
        if key not in _opened:
            _opened[key] = Records(key)
        return _opened[key]
