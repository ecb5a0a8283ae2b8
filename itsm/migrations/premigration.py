"""The records schema as opsflow made it before migrations existed, frozen: never edit it.

Up to d71d4a3 each store module made its tables with `create_all` when first used, so a
database from then holds any subset of these tables, each exactly as declared here. The
first two revisions make the ones missing (`create_missing`); `inspect_tables` tells such a
database from one whose tables opsflow never made, before anything is changed in it.
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

_Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_Time = sa.DateTime(timezone=True)

metadata = sa.MetaData()

AT_2A3D754 = (
    "incidents",
    "events",
    "worklog",
    "audit",
    "remediations",
    "problems",
    "known_errors",
    "known_error_outcomes",
    "service_requests",
    "access_grants",
    "leases",
    "host_facts",
    "maintenance_windows",
)
"""The tables of commit 2a3d754, the schema the first revision makes."""

ADDED_AFTER_2A3D754 = ("event_failures", "incident_reports")
"""The tables added after 2a3d754 and before migrations (d71d4a3), made by the second revision."""


def _id() -> sa.Column:
    return sa.Column("id", _Id, primary_key=True, autoincrement=True)


incidents = sa.Table(
    "incidents",
    metadata,
    _id(),
    sa.Column("host", sa.String(255)),
    sa.Column("service", sa.String(255)),
    sa.Column("symptom", sa.String(128), nullable=False),
    sa.Column("summary", sa.Text, nullable=False),
    sa.Column("correlation_key", sa.String(512), nullable=False),
    sa.Column("impact", sa.Integer, nullable=False),
    sa.Column("urgency", sa.Integer, nullable=False),
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("hold_reason", sa.Text),
    sa.Column("resolution_code", sa.String(32)),
    sa.Column("resolution_notes", sa.Text),
    sa.Column("assignment_group", sa.String(255)),
    sa.Column("assigned_to", sa.String(255)),
    sa.Column("reported_by", sa.String(255)),
    sa.Column("runbook", sa.String(255)),
    sa.Column("opened_at", _Time, nullable=False),
    sa.Column("responded_at", _Time),
    sa.Column("resolved_at", _Time),
    sa.Column("closed_at", _Time),
    sa.Column("updated_at", _Time, nullable=False),
    sa.Column("respond_due", _Time, nullable=False),
    sa.Column("resolve_due", _Time, nullable=False),
    sa.Column("paused_s", sa.Float, nullable=False),
    sa.Column("hold_started_at", _Time),
    sa.Column("event_count", sa.Integer, nullable=False),
    sa.Column("last_event_at", _Time),
    sa.Column("time_to_restore_s", sa.Float),
    sa.Column("flow_run_ids", _Json, nullable=False),
    sa.Column("problem_id", _Id),
    sa.Column("known_error_id", _Id),
    sa.Column("version", sa.Integer, nullable=False),
    sa.CheckConstraint(
        "state IN ('New', 'In Progress', 'On Hold', 'Resolved', 'Closed', 'Canceled')",
        name="ck_incidents_state",
    ),
    sa.CheckConstraint(
        "impact BETWEEN 1 AND 3 AND urgency BETWEEN 1 AND 3", name="ck_incidents_iu"
    ),
    sa.CheckConstraint("priority BETWEEN 1 AND 5", name="ck_incidents_priority"),
    sqlite_autoincrement=True,
)
_open_incident = sa.text("state IN ('New', 'In Progress', 'On Hold')")
sa.Index(
    "uq_incidents_open_key",
    incidents.c.correlation_key,
    unique=True,
    sqlite_where=_open_incident,
    postgresql_where=_open_incident,
)
sa.Index("ix_incidents_state_priority", incidents.c.state, incidents.c.priority)
sa.Index("ix_incidents_host", incidents.c.host)
sa.Index("ix_incidents_service", incidents.c.service)

events = sa.Table(
    "events",
    metadata,
    _id(),
    sa.Column("dedup_key", sa.String(64), nullable=False, unique=True),
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("fingerprint", sa.String(128), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("host", sa.String(255)),
    sa.Column("service", sa.String(255)),
    sa.Column("labels", _Json, nullable=False),
    sa.Column("annotations", _Json, nullable=False),
    sa.Column("summary", sa.Text, nullable=False),
    sa.Column("occurred_at", _Time, nullable=False),
    sa.Column("ends_at", _Time),
    sa.Column("received_at", _Time, nullable=False),
    sa.Column("event_class", sa.String(16)),
    sa.Column("rule", sa.String(255)),
    sa.Column("incident_id", _Id, sa.ForeignKey("incidents.id")),
    sa.Column("triaged_at", _Time),
)
_untriaged = sa.text("triaged_at IS NULL")
sa.Index("ix_events_pending", events.c.id, sqlite_where=_untriaged, postgresql_where=_untriaged)
sa.Index("ix_events_incident", events.c.incident_id)

worklog = sa.Table(
    "worklog",
    metadata,
    _id(),
    sa.Column("incident_id", _Id, sa.ForeignKey("incidents.id"), nullable=False),
    sa.Column("at", _Time, nullable=False),
    sa.Column("author", sa.String(255), nullable=False),
    sa.Column("text", sa.Text, nullable=False),
)
sa.Index("ix_worklog_incident", worklog.c.incident_id, worklog.c.id)

audit = sa.Table(
    "audit",
    metadata,
    _id(),
    sa.Column("at", _Time, nullable=False),
    sa.Column("actor", sa.String(255), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("record_type", sa.String(32), nullable=False),
    sa.Column("record_id", _Id, nullable=False),
    sa.Column("before", _Json),
    sa.Column("after", _Json),
    sa.Column("flow_run_id", sa.String(64)),
)
sa.Index("ix_audit_record", audit.c.record_type, audit.c.record_id, audit.c.id)

event_failures = sa.Table(
    "event_failures",
    metadata,
    sa.Column("event_id", _Id, sa.ForeignKey("events.id"), primary_key=True),
    sa.Column("at", _Time, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
)

incident_reports = sa.Table(
    "incident_reports",
    metadata,
    _id(),
    sa.Column("incident_id", _Id, sa.ForeignKey("incidents.id"), nullable=False),
    sa.Column("reporter", sa.String(255), nullable=False),
    sa.Column("at", _Time, nullable=False),
)
sa.Index(
    "ix_incident_reports_reporter", incident_reports.c.reporter, incident_reports.c.incident_id
)

remediations = sa.Table(
    "remediations",
    metadata,
    _id(),
    sa.Column("service", sa.String(255), nullable=False),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("incident_id", _Id, sa.ForeignKey("incidents.id"), nullable=False),
    sa.Column("at", _Time, nullable=False),
)
sa.Index("ix_remediations_service_at", remediations.c.service, remediations.c.at)

problems = sa.Table(
    "problems",
    metadata,
    _id(),
    sa.Column("service", sa.String(255), nullable=False),
    sa.Column("symptom", sa.String(128), nullable=False),
    sa.Column("summary", sa.Text, nullable=False),
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("root_cause", sa.Text),
    sa.Column("resolution_notes", sa.Text),
    sa.Column("opened_at", _Time, nullable=False),
    sa.Column("updated_at", _Time, nullable=False),
    sa.Column("resolved_at", _Time),
    sa.Column("closed_at", _Time),
    sa.Column("version", sa.Integer, nullable=False),
    sa.CheckConstraint(
        "state IN ('New', 'Root Cause Analysis', 'Known Error', 'Resolved', 'Closed')",
        name="ck_problems_state",
    ),
    sqlite_autoincrement=True,
)
_open_problem = sa.text("state IN ('New', 'Root Cause Analysis', 'Known Error')")
sa.Index(
    "uq_problems_open_signature",
    problems.c.service,
    problems.c.symptom,
    unique=True,
    sqlite_where=_open_problem,
    postgresql_where=_open_problem,
)

known_errors = sa.Table(
    "known_errors",
    metadata,
    _id(),
    sa.Column("service", sa.String(255), nullable=False),
    sa.Column("symptom", sa.String(128), nullable=False),
    sa.Column("host", sa.String(255)),
    sa.Column("labels", _Json, nullable=False),
    sa.Column("root_cause", sa.Text, nullable=False),
    sa.Column("workaround", sa.String(255), nullable=False),
    sa.Column("problem_id", _Id, sa.ForeignKey("problems.id")),
    sa.Column("times_applied", sa.Integer, nullable=False),
    sa.Column("times_worked", sa.Integer, nullable=False),
    sa.Column("created_at", _Time, nullable=False),
    sa.Column("updated_at", _Time, nullable=False),
    sa.Column("retired_at", _Time),
    sa.Column("version", sa.Integer, nullable=False),
    sa.CheckConstraint("times_worked <= times_applied", name="ck_known_errors_counts"),
    sqlite_autoincrement=True,
)
sa.Index("ix_known_errors_signature", known_errors.c.service, known_errors.c.symptom)

known_error_outcomes = sa.Table(
    "known_error_outcomes",
    metadata,
    _id(),
    sa.Column("known_error_id", _Id, sa.ForeignKey("known_errors.id"), nullable=False),
    sa.Column("incident_id", _Id, sa.ForeignKey("incidents.id"), nullable=False),
    sa.Column("worked", sa.Boolean, nullable=False),
    sa.Column("at", _Time, nullable=False),
    sa.UniqueConstraint("known_error_id", "incident_id", name="uq_known_error_outcomes"),
)

service_requests = sa.Table(
    "service_requests",
    metadata,
    _id(),
    sa.Column("item", sa.String(63), nullable=False),
    sa.Column("inputs", _Json, nullable=False),
    sa.Column("requester", sa.String(255), nullable=False),
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("approval_policy", sa.String(8), nullable=False),
    sa.Column("approver", sa.String(255)),
    sa.Column("decision_comment", sa.Text),
    sa.Column("decided_at", _Time),
    sa.Column("approval_due_at", _Time),
    sa.Column("escalated_at", _Time),
    sa.Column("approval_run_id", sa.String(64)),
    sa.Column("submitted_at", _Time, nullable=False),
    sa.Column("updated_at", _Time, nullable=False),
    sa.Column("fulfil_due_at", _Time),
    sa.Column("closed_at", _Time),
    sa.Column("outcome", sa.Text),
    sa.Column("flow_run_ids", _Json, nullable=False),
    sa.Column("attachments", _Json, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.CheckConstraint(
        "state IN ('submitted', 'awaiting-approval', 'approved', 'fulfilling', 'fulfilled', "
        "'failed', 'rejected', 'expired', 'canceled')",
        name="ck_service_requests_state",
    ),
    sqlite_autoincrement=True,
)
sa.Index("ix_service_requests_state", service_requests.c.state)
sa.Index("ix_service_requests_requester", service_requests.c.requester)

access_grants = sa.Table(
    "access_grants",
    metadata,
    _id(),
    sa.Column("entitlement", sa.String(63), nullable=False),
    sa.Column("privilege", sa.String(16), nullable=False),
    sa.Column("host_group", sa.String(63), nullable=False),
    sa.Column("requester", sa.String(255), nullable=False),
    sa.Column("username", sa.String(32), nullable=False),
    sa.Column("ssh_public_key", sa.Text, nullable=False),
    sa.Column("duration_minutes", sa.Float, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("requested_at", _Time, nullable=False),
    sa.Column("approver", sa.String(255)),
    sa.Column("decided_at", _Time),
    sa.Column("decision_comment", sa.Text),
    sa.Column("hosts", _Json, nullable=False),
    sa.Column("starts_at", _Time),
    sa.Column("ends_at", _Time),
    sa.Column("revoke_requested_at", _Time),
    sa.Column("revoke_requested_by", sa.String(255)),
    sa.Column("ended_at", _Time),
    sa.Column("last_error", sa.Text),
    sa.Column("flow_run_ids", _Json, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.CheckConstraint(
        "state IN ('requested', 'approved', 'active', 'expired', 'revoked', 'denied')",
        name="ck_access_grants_state",
    ),
    sa.CheckConstraint("privilege IN ('login', 'sudo')", name="ck_access_grants_privilege"),
    sa.CheckConstraint("duration_minutes > 0", name="ck_access_grants_duration"),
    sqlite_autoincrement=True,
)
sa.Index("ix_access_grants_state", access_grants.c.state)
sa.Index("ix_access_grants_username", access_grants.c.username, access_grants.c.state)

leases = sa.Table(
    "leases",
    metadata,
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("holder", sa.String(255), nullable=False),
    sa.Column("until", _Time, nullable=False),
)

host_facts = sa.Table(
    "host_facts",
    metadata,
    sa.Column("id", _Id, primary_key=True),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("gathered_at", _Time, nullable=False),
    sa.Column("reachable", sa.Boolean, nullable=False),
    sa.Column("facts", _Json),
    sa.Column("services", _Json, nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("flow_run_id", sa.String(64)),
    sqlite_autoincrement=True,
)
sa.Index("ix_host_facts_host_at", host_facts.c.host, host_facts.c.gathered_at)

maintenance_windows = sa.Table(
    "maintenance_windows",
    metadata,
    sa.Column("id", _Id, primary_key=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("hosts", _Json, nullable=False),
    sa.Column("start", _Time, nullable=False),
    sa.Column("end", _Time, nullable=False),
    sa.Column("closed_at", _Time),
    sa.Column("flow_run_id", sa.String(64)),
    sqlite_autoincrement=True,
)
sa.Index("ix_maintenance_windows_end", maintenance_windows.c.end)


def create_missing(bind: sa.Connection, names: Iterable[str]) -> list[str]:
    """Create those of the tables `names` (with their indexes) that `bind` lacks; their names."""
    present = set(sa.inspect(bind).get_table_names())
    missing = [metadata.tables[name] for name in names if name not in present]
    metadata.create_all(bind, tables=missing, checkfirst=False)
    return [table.name for table in missing]


def drop(bind: sa.Connection, names: Iterable[str]) -> None:
    """Drop the tables `names` (for downgrades), those that reference others first."""
    tables = [metadata.tables[name] for name in names]
    metadata.drop_all(bind, tables=tables, checkfirst=True)


def inspect_tables(bind: sa.Connection) -> tuple[list[str], list[str]]:
    """The tables of this schema that `bind` holds, and a sentence for each of them whose
    columns differ from its columns here (none when opsflow made them before migrations)."""
    inspector = sa.inspect(bind)
    present = sorted(name for name in inspector.get_table_names() if name in metadata.tables)
    differences = []
    for name in present:
        found = {column["name"] for column in inspector.get_columns(name)}
        expected = set(metadata.tables[name].columns.keys())
        if found != expected:
            differences.append(
                f"table {name} has columns {sorted(found - expected)} it should not have "
                f"and lacks {sorted(expected - found)}"
            )
    return present, differences
