"""The desk's web page in a real headless Chromium: report, follow, decide, watch the queue."""

from __future__ import annotations

import requests

from opsflow.lab.people import token_file
from tests.support.waiting import wait_for


def sign_in(page, lab_desk, lab, person: str) -> None:
    page.goto(lab_desk.url + "/")
    page.fill("#token", token_file(lab.directory, person).read_text())
    page.click("#sign-in")
    page.wait_for_selector("#report-section:not(.hidden)")


def test_a_person_files_an_incident_and_sees_it_resolved(page, lab_desk, lab) -> None:
    sign_in(page, lab_desk, lab, "carol")
    assert "Carol User" in page.inner_text("#whoami")
    page.fill("#summary", "The app shows a blank page")
    page.select_option("#service", "app")
    page.select_option("#host", lab.hosts[0].name)
    page.select_option("#impact", "3")
    page.select_option("#urgency", "2")
    page.click("#report-submit")
    page.wait_for_selector("#report-result.ok")
    result = page.inner_text("#report-result")
    number = result.split("incident is ")[1].split(" ")[0]
    # carol's impact 3 is noted in the worklog; the service's impact 2 applies: I2/U2 is P3.
    assert number.startswith("INC") and "P3" in result
    row = page.locator(f"tr[data-number='{number}']")
    row.wait_for()
    assert row.locator(".state").inner_text() == "New"

    operator = {"Authorization": f"Bearer {token_file(lab.directory, 'alice').read_text()}"}
    resolved = requests.patch(
        f"{lab_desk.url}/api/v1/incidents/{number}",
        json={
            "state": "Resolved",
            "resolution_code": "manual",
            "resolution_notes": "cache cleared",
        },
        headers=operator,
        timeout=10,
    )
    assert resolved.status_code == 200
    page.wait_for_function(
        "n => document.querySelector(`tr[data-number='${n}'] .state`).textContent === 'Resolved'",
        arg=number,
    )
    assert "cache cleared" in row.inner_text()


def test_a_wrong_token_is_refused_plainly(page, lab_desk) -> None:
    page.goto(lab_desk.url + "/")
    page.fill("#token", "not-a-token")
    page.click("#sign-in")
    page.wait_for_selector("#sign-in-result:has-text('Could not sign in')")
    assert page.is_hidden("#report-section")


def test_an_approver_approves_and_the_requester_sees_it_fulfilled(browser, lab_desk, lab) -> None:
    requester = browser.new_context().new_page()
    requester.set_default_timeout(20_000)
    sign_in(requester, lab_desk, lab, "carol")
    requester.select_option("#catalog-item", "diagnostic-bundle")
    requester.select_option("#input-host", lab.hosts[2].name)
    requester.click("#request-submit")
    requester.wait_for_selector("#request-result.ok")
    number = requester.inner_text("#request-result").split("request is ")[1].split(" ")[0]
    mine = requester.locator(f"#my-requests tr[data-number='{number}'] .state")
    mine.wait_for()

    approver = browser.new_context().new_page()
    approver.set_default_timeout(20_000)
    sign_in(approver, lab_desk, lab, "bob")
    row = approver.locator(f"#pending-approvals tr[data-number='{number}']")
    row.locator("button[data-decision='approve']").click()
    approver.wait_for_selector("#approval-result.ok")

    requester.wait_for_function(
        "n => document.querySelector(`#my-requests tr[data-number='${n}'] .state`)"
        ".textContent === 'fulfilled'",
        arg=number,
        timeout=60_000,
    )


def call(lab_desk, lab, person: str, method: str, path: str, **kwargs) -> requests.Response:
    """The desk's API as `person`, as the page calls it."""
    token = token_file(lab.directory, person).read_text()
    return requests.request(
        method,
        f"{lab_desk.url}/api/v1{path}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
        **kwargs,
    )


def test_an_approver_sees_access_waiting_for_them_never_their_own_and_approves_it(
    page, lab_desk, lab
) -> None:
    asked = call(
        lab_desk,
        lab,
        "carol",
        "POST",
        "/access-requests",
        json={"entitlement": "web-login", "duration_minutes": 10, "reason": "page test"},
    )
    assert asked.status_code == 201, asked.text
    grant = asked.json()
    own = call(lab_desk, lab, "bob", "POST", "/access-requests", json={"entitlement": "db-sudo"})
    assert own.status_code == 201, own.text
    try:
        waiting = {
            person: {
                g["id"]
                for g in call(lab_desk, lab, person, "GET", "/approvals").json()["access_grants"]
            }
            for person in ("bob", "carol", "alice")
        }
        assert grant["id"] in waiting["bob"] and own.json()["id"] not in waiting["bob"]
        assert grant["id"] not in waiting["carol"]  # her own
        assert grant["id"] not in waiting["alice"]  # an operator, not one of its approvers

        sign_in(page, lab_desk, lab, "bob")
        row = page.locator(f"#pending-access tr[data-grant='{grant['id']}']")
        assert "web-login" in row.inner_text() and "carol" in row.inner_text()
        assert page.locator(f"#pending-access tr[data-grant='{own.json()['id']}']").count() == 0
        row.locator("button[data-decision='approve']").click()
        page.wait_for_selector("#approval-result.ok")
        row.wait_for(state="detached")

        decided = call(lab_desk, lab, "carol", "GET", f"/access-grants/{grant['id']}").json()
        assert decided["approver"] == "bob"
        assert decided["state"] in ("approved", "active")
        wait_for(
            lambda: (
                call(lab_desk, lab, "carol", "GET", f"/access-grants/{grant['id']}").json()["state"]
                == "active"
            ),
            60,
            "the grant approved on the page to be in place",
        )
    finally:
        call(lab_desk, lab, "carol", "DELETE", f"/access-grants/{grant['id']}")
        call(lab_desk, lab, "bob", "DELETE", f"/access-grants/{own.json()['id']}")


def test_an_approver_rejects_a_request_on_the_page(page, lab_desk, lab) -> None:
    asked = call(
        lab_desk,
        lab,
        "carol",
        "POST",
        "/requests",
        json={"item": "diagnostic-bundle", "inputs": {"host": lab.hosts[1].name}},
    )
    assert asked.status_code == 201, asked.text
    number = asked.json()["number"]
    sign_in(page, lab_desk, lab, "bob")
    row = page.locator(f"#pending-approvals tr[data-number='{number}']")
    row.locator("button[data-decision='reject']").click()
    page.wait_for_selector("#approval-result.ok")
    rejected = call(lab_desk, lab, "carol", "GET", f"/requests/{number}").json()
    assert rejected["state"] == "rejected" and rejected["approver"] == "bob"


def test_an_operator_sees_the_incident_queue_most_urgent_first(page, lab_desk, lab) -> None:
    reported = []
    for host, impact, urgency in ((lab.hosts[3].name, 3, 3), (lab.hosts[4].name, 1, 1)):
        answer = call(
            lab_desk,
            lab,
            "alice",
            "POST",
            "/incidents",
            json={
                "summary": f"queue test on {host}",
                "host": host,
                "service": "app",
                "symptom": "queue-test",
                "impact": impact,
                "urgency": urgency,
            },
        )
        assert answer.status_code == 201, answer.text
        reported.append(answer.json())
    low, urgent = reported
    assert (low["priority"], urgent["priority"]) == (5, 1)
    try:
        sign_in(page, lab_desk, lab, "alice")
        page.wait_for_selector(f"#incident-queue tr[data-number='{urgent['number']}']")
        page.wait_for_selector(f"#incident-queue tr[data-number='{low['number']}']")
        order = page.eval_on_selector_all(
            "#incident-queue tr", "rows => rows.map(r => r.dataset.number)"
        )
        assert order.index(urgent["number"]) < order.index(low["number"])
        priorities = page.eval_on_selector_all(
            "#incident-queue tr td:nth-child(2)", "cells => cells.map(c => c.textContent)"
        )
        assert priorities == sorted(priorities)
        assert page.is_visible("#status-section")

        call(
            lab_desk,
            lab,
            "alice",
            "PATCH",
            f"/incidents/{urgent['number']}",
            json={"state": "Resolved", "resolution_code": "manual", "resolution_notes": "done"},
        )
        page.wait_for_selector(
            f"#incident-queue tr[data-number='{urgent['number']}']", state="detached"
        )
    finally:
        for incident in reported:
            call(
                lab_desk,
                lab,
                "alice",
                "PATCH",
                f"/incidents/{incident['number']}",
                json={"state": "Canceled"},
            )


def test_a_requester_sees_neither_the_queue_nor_the_status_view(page, lab_desk, lab) -> None:
    sign_in(page, lab_desk, lab, "carol")
    assert page.is_hidden("#queue-section") and page.is_hidden("#status-section")
    assert call(lab_desk, lab, "carol", "GET", "/approvals").json() == {
        "requests": [],
        "access_grants": [],
    }


def test_the_page_lists_releases_as_they_end(page, lab_desk, lab) -> None:
    operator = {"Authorization": f"Bearer {token_file(lab.directory, 'alice').read_text()}"}
    # A version no host keeps: the rollout stops at its first host, having changed nothing.
    made = requests.post(
        f"{lab_desk.url}/api/v1/releases",
        json={"service": "app", "version": "9.9.9-nowhere"},
        headers=operator,
        timeout=10,
    )
    assert made.status_code == 201, made.text
    number = made.json()["number"]
    sign_in(page, lab_desk, lab, "alice")
    row = page.locator(f"#releases tr[data-number='{number}']")
    row.wait_for()
    assert "app" in row.inner_text() and "9.9.9-nowhere" in row.inner_text()
    page.wait_for_function(
        "n => document.querySelector(`#releases tr[data-number='${n}'] .state`).textContent"
        " === 'failed'",
        arg=number,
        timeout=60_000,
    )
    assert "no release 9.9.9-nowhere" in row.inner_text()
