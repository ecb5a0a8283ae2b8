"""Notification blocks opsflow pages people through."""

from __future__ import annotations

from prefect.blocks.notifications import CustomWebhookNotificationBlock


def save_webhook_pager(name: str, url: str) -> CustomWebhookNotificationBlock:
    """A custom-webhook block that POSTs `{"subject", "body"}` as JSON to `url`."""
    block = CustomWebhookNotificationBlock(
        name=name,
        url=url,
        method="POST",
        json_data={"subject": "{{subject}}", "body": "{{body}}"},
        allow_private_urls=True,
    )
    block.save(name, overwrite=True)
    return block
