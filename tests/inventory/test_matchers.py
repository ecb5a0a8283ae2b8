"""Matchers read and behave as Alertmanager's: syntax, absent labels, anchored expressions."""

from __future__ import annotations

import pytest

from opsflow.inventory.matchers import MatchTimeoutError, parse_matcher


@pytest.mark.parametrize(
    ("text", "name", "op", "value"),
    [
        ('alertname="Watchdog"', "alertname", "=", "Watchdog"),
        ("  severity != warning ", "severity", "!=", "warning"),
        ('job=~"app|node-.*"', "job", "=~", "app|node-.*"),
        (r'path!~"/var/\d+"', "path", "!~", r"/var/\d+"),
        (r'summary="say \"hi\"\n"', "summary", "=", 'say "hi"\n'),
        ('empty=""', "empty", "=", ""),
    ],
)
def test_text_forms(text: str, name: str, op: str, value: str) -> None:
    matcher = parse_matcher(text)
    assert (matcher.name, matcher.op, matcher.value) == (name, op, value)
    assert parse_matcher(str(matcher)) == matcher


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("job", "is not a matcher"),
        ('1job="x"', "is not a matcher"),
        ('job="a"b"', "unescaped double quote"),
        ('job=~"a(b"', "invalid regular expression"),
    ],
)
def test_mistakes(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_matcher(text)


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ('env=""', {}, True),
        ('env!=""', {}, False),
        ('env=~"prod|"', {}, True),
        ('env!~"prod"', {}, True),
        ('job=~"app"', {"job": "myapp"}, False),
        ('job=~"app"', {"job": "app\n"}, False),
        ('job=~"a.*"', {"job": "app"}, True),
        ('job=~"(?i)APP"', {"job": "app"}, True),
        ('job=~"[[:alpha:]]+"', {"job": "app"}, True),
        ('job=~"a|b"', {"job": "ab"}, False),
    ],
)
def test_meaning(text: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_matcher(text).matches(labels) is expected


def test_a_runaway_expression_is_cut_short() -> None:
    with pytest.raises(MatchTimeoutError, match="gave up after"):
        parse_matcher('x=~"(.*a){25}"').matches({"x": "a" * 2000 + "b"})
