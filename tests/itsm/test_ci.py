"""The label contract: which host and service an alert's labels name, and back for silences."""

from __future__ import annotations

import pytest

from opsflow.inventory.models import Estate, Host, LabelContract
from opsflow.itsm.ci import ci_of, host_part, silence_label_sets

HOSTS = [
    Host(name="web1", address="127.0.99.1"),
    Host(name="web2", address="2001:db8::2"),
    Host(name="db1", address="DB1.Example.COM"),
]
ESTATE = Estate(hosts=HOSTS)


@pytest.mark.parametrize(
    ("instance", "part"),
    [
        ("127.0.99.1:9100", "127.0.99.1"),
        ("web1", "web1"),
        ("[2001:db8::2]:9100", "2001:db8::2"),
        ("[2001:db8::2]", "2001:db8::2"),
        ("2001:db8::2", "2001:db8::2"),
        ("https://db1.example.com:8443/health", "db1.example.com"),
        ("[broken:9100", ""),
    ],
)
def test_host_part(instance: str, part: str) -> None:
    assert host_part(instance) == part


@pytest.mark.parametrize(
    ("labels", "ci"),
    [
        ({"instance": "127.0.99.1:9100", "job": "node"}, ("web1", "node")),
        ({"instance": "[2001:0db8:0::2]:9100", "job": "node"}, ("web2", "node")),
        ({"instance": "db1.example.com.:5432"}, ("db1", None)),
        ({"instance": "web1:9100", "service": "app", "job": "node"}, ("web1", "app")),
        ({"instance": "10.9.9.9:9100", "job": "node"}, (None, "node")),
        ({"host": "elsewhere", "instance": "web1:9100"}, ("elsewhere", None)),
        ({"host": "127.0.99.1"}, ("web1", None)),
        ({"host": " ", "instance": "web1:1"}, ("web1", None)),
        ({}, (None, None)),
        ({"host": "h" * 256, "job": "j" * 255}, (None, "j" * 255)),
    ],
)
def test_default_contract(labels: dict[str, str], ci: tuple) -> None:
    assert ci_of(labels, ESTATE) == ci


def test_silence_label_sets_follow_the_contract() -> None:
    sets = silence_label_sets(HOSTS[:2], LabelContract(host=["host", "node"]))
    assert [[(m.name, m.op, m.value) for m in s] for s in sets] == [
        [("host", "=~", "web1|web2")],
        [("host", "=", ""), ("node", "=~", "web1|web2")],
        [
            ("host", "=", ""),
            ("node", "=", ""),
            ("instance", "=~", r"(?:127\.0\.99\.1|\[2001:db8::2\]|web1|web2)(?::[0-9]+)?"),
        ],
    ]
    instance = sets[2][2]
    assert instance.matches({"instance": "[2001:db8::2]:9100"})
    assert instance.matches({"instance": "127.0.99.1:9100"})
    assert not instance.matches({"instance": "127.0.99.10:9100"})
    assert not instance.matches({"instance": "web10"})
