"""Telling how a release ended: its requester notified through their block (else their
team's), audited on the release either way, and the release published as a markdown artifact
with each host's step and its audit trail, for the Prefect UI.
"""

from __future__ import annotations

from datetime import UTC, datetime

from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger

from opsflow.inventory.models import Estate
from opsflow.itsm.releases import Release, release_notice, render_release
from opsflow.itsm.store.records import open_records
from opsflow.tasks.notify import person_block, send_notification
from opsflow.tasks.rollout import ACTOR


def tell_requester(estate: Estate, record: Release) -> None:
    """Notify the requester through their block, else their team's; audit either way."""
    releases = open_records().releases
    now = datetime.now(UTC)
    block = person_block(estate, record.requester)
    subject, body = release_notice(record)
    if block is None:
        get_run_logger().warning("%s: nothing reaches %s", record.number, record.requester)
        releases.note(record.id, ACTOR, "notification_skipped", {"subject": subject}, now)
        return
    try:
        send_notification(block, subject, body)
    except Exception as exc:
        get_run_logger().warning("%s: notifying %s failed: %s", record.number, block, exc)
        detail = {"block": block, "error": str(exc)}
        releases.note(record.id, ACTOR, "notification_failed", detail, now)
    else:
        detail = {"block": block, "subject": subject}
        releases.note(record.id, ACTOR, "requester_notified", detail, now)


def publish_release(record: Release) -> None:
    """The release, each host's step and the audit trail as a markdown artifact."""
    create_markdown_artifact(
        key=f"release-{record.number.lower()}",
        markdown=render_release(record, open_records().releases.audit_trail(record.id)),
        description=f"Release {record.number}",
    )
