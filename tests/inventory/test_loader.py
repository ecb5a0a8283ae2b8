"""Each kind of inventory mistake gives one clear error naming file, entry and field."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from opsflow.errors import InventoryError
from opsflow.inventory.loader import load_estate


@pytest.fixture(scope="module")
def host_key(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("keys") / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return (
        path.with_suffix(".pub").read_text().split(" ")[0]
        + " "
        + (path.with_suffix(".pub").read_text().split(" ")[1])
    )


def host(name: str, key: str, **extra) -> dict:
    return {"name": name, "address": "127.0.0.1", "port": 2200, "host_key": key, **extra}


def service(**extra) -> dict:
    return {"name": "app", "group": "web", "health_check": {"kind": "http", "port": 8080}, **extra}


def write(directory: Path, hosts: list[dict], services: list[dict] | None = None) -> Path:
    (directory / "hosts.yaml").write_text(yaml.safe_dump({"hosts": hosts}))
    if services is not None:
        (directory / "services.yaml").write_text(yaml.safe_dump({"services": services}))
    return directory


def problems(directory: Path) -> str:
    with pytest.raises(InventoryError) as caught:
        load_estate(directory)
    return str(caught.value)


def test_valid_estate_loads(tmp_path: Path, host_key: str) -> None:
    write(tmp_path, [host("web1", host_key, groups=["web"])], [service()])
    estate = load_estate(tmp_path)
    assert [h.name for h in estate.hosts_of(estate.service("app"))] == ["web1"]


@pytest.mark.parametrize(
    ("hosts", "services", "expected"),
    [
        pytest.param(
            lambda k: [host("web1", k, colour="blue")],
            None,
            "hosts.yaml: hosts[0] (web1): colour: unknown field",
            id="unknown-field",
        ),
        pytest.param(
            lambda k: [host("web1", k, port=70000)],
            None,
            "hosts.yaml: hosts[0] (web1): port: Input should be less than or equal to 65535",
            id="bad-port",
        ),
        pytest.param(
            lambda k: [host("web1", k), {**host("web1", k), "port": 2201}],
            None,
            "hosts.yaml: host 'web1' is defined 2 times",
            id="duplicate-host",
        ),
        pytest.param(
            lambda k: [host("web1", k, groups=["db"])],
            [service()],
            "services.yaml: app: group: no host is in group 'web'",
            id="missing-group",
        ),
        pytest.param(
            lambda k: [host("web1", "ssh-ed25519 AAAAnotbase64!!")],
            None,
            "hosts.yaml: hosts[0] (web1): host_key: the key's base64 body",
            id="malformed-key",
        ),
        pytest.param(
            lambda k: [host("Web 1; rm -rf /", k)],
            None,
            "hosts.yaml: hosts[0] (Web 1; rm -rf /): name: String should match pattern",
            id="unsafe-name",
        ),
        pytest.param(
            lambda k: [host("web1", None)],
            None,
            "hosts.yaml: web1: host_key: no pinned host key",
            id="unpinned-host",
        ),
    ],
)
def test_mistakes_are_named(tmp_path: Path, host_key: str, hosts, services, expected) -> None:
    write(tmp_path, hosts(host_key), services)
    assert expected in problems(tmp_path)


def test_every_problem_is_reported_at_once(tmp_path: Path, host_key: str) -> None:
    write(tmp_path, [host("web1", host_key, port=0), host("web2", host_key, colour="x")])
    message = problems(tmp_path)
    assert "hosts[0] (web1): port" in message
    assert "hosts[1] (web2): colour: unknown field" in message


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "hosts.yaml").write_text("hosts:\n  - name: [unclosed\n")
    assert "hosts.yaml line" in problems(tmp_path)


def test_unknown_file_is_an_error(tmp_path: Path, host_key: str) -> None:
    write(tmp_path, [host("web1", host_key)])
    (tmp_path / "host.yaml").write_text("hosts: []\n")
    assert "host.yaml: not an estate file" in problems(tmp_path)


def test_known_hosts_file_pins_keys(tmp_path: Path, host_key: str) -> None:
    write(tmp_path, [host("web1", None)])
    (tmp_path / "estate.yaml").write_text("known_hosts: known_hosts\n")
    (tmp_path / "known_hosts").write_text(f"[127.0.0.1]:2200 {host_key}\n")
    assert load_estate(tmp_path).host("web1").host_key == host_key


def test_rule_matchers_load_and_a_bad_one_is_named(tmp_path: Path, host_key: str) -> None:
    write(tmp_path, [host("web1", host_key)])
    good = {"name": "down", "class": "exception", "matchers": ['job =~ "app|node"', "env!=test"]}
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"rules": [good]}))
    [rule] = load_estate(tmp_path).rules
    assert [str(m) for m in rule.matchers] == ['job=~"app|node"', 'env!="test"']

    bad = {"name": "broken", "class": "exception", "matchers": ['alertname="X"', 'job=~"(app"']}
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"rules": [good, bad]}))
    message = problems(tmp_path)
    assert 'rules.yaml: rules[1] (broken): matchers.1: job=~"(app": invalid ' in message
    assert "rules[0]" not in message


def test_label_contract_and_alertmanager_are_estate_settings(tmp_path: Path, host_key: str) -> None:
    write(tmp_path, [host("web1", host_key)])
    settings = {
        "labels": {"host": ["hostname"], "service": ["job"]},
        "alertmanager": {"url": "http://127.0.0.1:9093", "credentials": "am"},
    }
    (tmp_path / "estate.yaml").write_text(yaml.safe_dump(settings))
    loaded = load_estate(tmp_path).settings
    assert (loaded.labels.host, loaded.labels.instance, loaded.labels.service) == (
        ["hostname"],
        ["instance"],
        ["job"],
    )
    assert loaded.alertmanager is not None and loaded.alertmanager.credentials == "am"
    (tmp_path / "estate.yaml").write_text(yaml.safe_dump({"labels": {"host": ["bad-name"]}}))
    assert "estate.yaml: labels.host.0: String should match pattern" in problems(tmp_path)


def test_the_paging_grouping_window_is_a_validated_estate_setting(
    tmp_path: Path, host_key: str
) -> None:
    write(tmp_path, [host("web1", host_key)])
    assert load_estate(tmp_path).settings.page_grouping_minutes == 5
    (tmp_path / "estate.yaml").write_text("page_grouping_minutes: 0.5\n")
    assert load_estate(tmp_path).settings.page_grouping_minutes == 0.5
    for value, reason in [
        ("-1", "Input should be greater than or equal to 0"),
        ("1441", "Input should be less than or equal to 1440"),
        ("soon", "Input should be a valid number"),
        (".nan", "Input should be"),
    ]:
        (tmp_path / "estate.yaml").write_text(f"page_grouping_minutes: {value}\n")
        assert f"estate.yaml: page_grouping_minutes: {reason}" in problems(tmp_path), value
