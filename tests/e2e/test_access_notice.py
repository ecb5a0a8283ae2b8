"""The person who asked for access is told when it is in place and when it ends."""

from __future__ import annotations

import requests

from opsflow.lab.people import token_file
from tests.support.waiting import wait_for


def test_requester_is_told_of_grant_and_revoke(lab_desk, lab, pager) -> None:
    def call(person: str, method: str, path: str, **kwargs) -> requests.Response:
        token = token_file(lab.directory, person).read_text()
        return requests.request(
            method,
            f"{lab_desk.url}/api/v1{path}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
            **kwargs,
        )

    def pages_about(what: str) -> list[dict]:
        return [p for p in pager.pages if f"access web-login: {what}" in p["body"]["subject"]]

    grant = call(
        "carol",
        "POST",
        "/access-requests",
        json={"entitlement": "web-login", "duration_minutes": 30},
    ).json()
    assert call("bob", "POST", f"/access-requests/{grant['id']}/approve").status_code == 202
    wait_for(lambda: pages_about("active"), 60, "carol told her access is active")
    assert call("carol", "DELETE", f"/access-grants/{grant['id']}").status_code == 202
    wait_for(lambda: pages_about("revoked"), 60, "carol told her access is revoked")
