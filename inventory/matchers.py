"""Label matchers as Alertmanager writes them (`name="value"`, `!=`, `=~`, `!~`), for rules.

The syntax and meaning are Alertmanager's, so a team copies its routes' matchers into the
estate's rules unchanged: a label that is absent counts as the empty string, and a regular
expression must match the whole value (anchored as Alertmanager anchors it, `^(?:RE)$`).
The expressions come from the estate but the values they run over come from outside, so each
match is bounded in time (`MATCH_TIMEOUT_S`): Alertmanager's RE2 engine runs in linear time,
Python's backtracking engines do not, and one pathological pattern must fail an event, not
hang triage.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, get_args

import regex
from pydantic import BaseModel, BeforeValidator, ConfigDict, PrivateAttr, model_validator

from opsflow.errors import PermanentError
from opsflow.inventory.types import LabelName

MATCH_TIMEOUT_S = 0.05
"""The longest one regular expression may run over one label value (values hold <= 2 KiB)."""

Op = Literal["=", "!=", "=~", "!~"]
# Each operator by its text: what `_MATCHER` matched, as an `Op`.
_OPS: dict[str, Op] = {op: op for op in get_args(Op)}

_MATCHER = re.compile(r"^\s*([a-zA-Z_][a-zA-Z0-9_]{0,127})\s*(=~|!~|!=|=)\s*(.*?)\s*$", re.S)


class MatchTimeoutError(PermanentError, TimeoutError):
    """A regular expression ran longer than `MATCH_TIMEOUT_S` over one label value."""


class Matcher(BaseModel):
    """One condition on one label, e.g. `job=~"node|app"`; see the module's docstring."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: LabelName
    op: Op
    value: str

    _pattern: regex.Pattern[str] | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _compile(self) -> Matcher:
        if self.op in ("=~", "!~"):
            try:
                # Alertmanager compiles "^(?:" + RE + ")$", and Go's `$` is Python's `\Z`.
                self._pattern = regex.compile(f"^(?:{self.value})\\Z")
            except regex.error as exc:
                raise ValueError(f"{self}: invalid regular expression: {exc}") from None
        return self

    def matches(self, labels: dict[str, str]) -> bool:
        """Whether `labels` satisfy this matcher (an absent label is the empty string).

        Raises:
            MatchTimeoutError: the regular expression ran over `MATCH_TIMEOUT_S`.
        """
        value = labels.get(self.name, "")
        if self._pattern is None:
            return (value == self.value) == (self.op == "=")
        try:
            found = self._pattern.search(value, timeout=MATCH_TIMEOUT_S) is not None
        except TimeoutError:
            raise MatchTimeoutError(
                f"{self}: gave up after {MATCH_TIMEOUT_S:g} s on a value of {len(value)} "
                "characters (simplify the expression)"
            ) from None
        return found == (self.op == "=~")

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'{self.name}{self.op}"{escaped}"'


def parse_matcher(text: str) -> Matcher:
    """The matcher `text` writes, as Alertmanager's `matchers:` do: `name OP value`, the value
    in double quotes (escapes `\\"`, `\\\\`, `\\n`; any other backslash stays) or bare."""
    found = _MATCHER.match(text)
    if found is None:
        raise ValueError(f'{text!r} is not a matcher like name="value" (=, !=, =~ or !~)')
    name, op, raw = found.groups()
    quoted = len(raw) >= 2 and raw[0] == raw[-1] == '"'
    return Matcher(name=name, op=_OPS[op], value=_unescape(raw[1:-1] if quoted else raw, text))


def _unescape(raw: str, text: str) -> str:
    out: list[str] = []
    chars = iter(raw)
    for char in chars:
        if char == '"':
            raise ValueError(f"{text!r}: the value holds an unescaped double quote")
        if char != "\\":
            out.append(char)
            continue
        following = next(chars, "")
        out.append({"n": "\n", '"': '"', "\\": "\\"}.get(following, "\\" + following))
    return "".join(out)


def _from_text(value: Any) -> Any:
    return parse_matcher(value) if isinstance(value, str) else value


MatcherText = Annotated[Matcher, BeforeValidator(_from_text)]
"""A matcher in the estate's YAML: Alertmanager's text form, or name/op/value fields."""
