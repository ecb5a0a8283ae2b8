"""The desk's web page in a real headless Chromium: report, follow, see it change."""

from __future__ import annotations

import shutil

import pytest
import requests

from opsflow.lab.people import token_file

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


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
