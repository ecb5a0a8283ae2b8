"""Text from alerts and people made safe to put into the markdown of Prefect artifacts."""

from __future__ import annotations

import re

_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+!|~&])")


def md_text(value: object, limit: int = 300) -> str:
    """`value` as literal markdown text on one line, cut to `limit` characters.

    Every character markdown or HTML could read as syntax (links, emphasis, tags, table
    pipes) is backslash-escaped, so `](javascript:…)` or `|` in a symptom prints as typed
    and cannot add a link or a table cell to the artifact.
    """
    text = " ".join(str(value).split())[:limit]
    return _SPECIAL.sub(r"\\\1", text)
