"""Reading what a user controls never follows a link the user planted to root's files."""

from __future__ import annotations

from typing import Any

import pytest

from opsflow.lab.hosts.run import run_on_host
from opsflow.tasks.access.accounts import ensure_account
from opsflow.tasks.access.facts import read_access_facts
from tests.support.access_lab import Person

pytestmark = pytest.mark.usefixtures("access_env")

USER = "frank"
HOST = "lab02"
ROOT_GRANT = 7777


@pytest.fixture
def frank(access_lab: Any, access_estate: Any) -> Any:
    """frank, a managed account on lab02; gone afterwards, with root's keys file."""
    host = access_estate.host(HOST)
    ensure_account.fn(host, USER)
    yield host
    run_on_host(HOST, ["userdel", "--force", "--remove", USER], access_lab.directory)
    run_on_host(HOST, ["rm", "-rf", "/root/.ssh"], access_lab.directory)


def test_review_does_not_read_keys_through_a_link_in_a_home(
    access_lab: Any, frank: Any, access_people: dict[str, Person]
) -> None:
    key = " ".join(access_people["bob"].public_key.split()[:2])
    plant = f"""
    mkdir -p -m 0700 /root/.ssh
    echo "{key} opsflow-grant-{ROOT_GRANT}" > /root/.ssh/authorized_keys
    setpriv --reuid={USER} --regid={USER} --init-groups -- ln -s /root/.ssh /home/{USER}/.ssh
    """
    assert run_on_host(HOST, ["sh", "-c", plant], access_lab.directory).returncode == 0

    facts = read_access_facts.fn(frank)

    assert USER in [a.username for a in facts.accounts]
    assert [(k.username, k.grant_id) for k in facts.ssh_keys] == [("root", ROOT_GRANT)]
