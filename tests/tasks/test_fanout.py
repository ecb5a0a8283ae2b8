"""A fan-out finishes every host, then reports every failure together."""

from __future__ import annotations

import pytest
from prefect import flow

from tasks.fanout import FanOutError, map_hosts, raise_failures
from tasks.ssh import run_command

pytestmark = pytest.mark.usefixtures("ssh_credentials")


def test_one_dead_host_does_not_hide_the_others(estate) -> None:
    dead = estate.hosts[1].model_copy(update={"name": "dead", "port": 1})
    hosts = [estate.hosts[0], dead, *estate.hosts[2:]]

    @flow
    def fan_out():
        return map_hosts(run_command.with_options(retries=0), hosts, limit=2, argv=["hostname"])

    outcomes = fan_out()
    assert [o.host.name for o in outcomes] == [h.name for h in hosts]
    assert [o.result.stdout.strip() for o in outcomes if o.ok] == [
        h.name for h in hosts if h.name != "dead"
    ]
    with pytest.raises(FanOutError) as caught:
        raise_failures("hostname", outcomes)
    assert f"1 of {len(hosts)} hosts failed" in str(caught.value)
    assert "dead: " in str(caught.value) and "connection refused" in str(caught.value)


def test_limit_must_be_positive(estate) -> None:
    with pytest.raises(ValueError, match="limit"):
        map_hosts(run_command, estate.hosts, limit=0, argv=["true"])
