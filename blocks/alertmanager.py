"""The Alertmanager credentials block: how opsflow authenticates to a team's Alertmanager.

Alertmanager itself asks for basic auth when its `--web.config.file` sets users; a proxy in
front of it may ask for a bearer token instead. The estate names the block
(`alertmanager.credentials` in estate.yaml); the secrets stay in Prefect.
"""

from __future__ import annotations

from opsflow.blocks.http import BasicOrBearerCredentials


class AlertmanagerCredentials(BasicOrBearerCredentials):
    """Basic auth (username and password) or a bearer token for Alertmanager's API."""

    _block_type_name = "opsflow Alertmanager credentials"
    _block_type_slug = "opsflow-alertmanager-credentials"
    _description = "How opsflow authenticates to Alertmanager to mirror maintenance windows."
