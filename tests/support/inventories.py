"""Ansible inventories an attacker or a slip would write, each with the form it is read in
and what opsflow's refusal says of it: the inventory tests check each refusal, and
`bench/hostile_inventories.py` what refusing each costs."""

from __future__ import annotations

from typing import NamedTuple

from opsflow.inventory.ansible import MAX_INVENTORY_BYTES


class Hostile(NamedTuple):
    """An inventory's text, its form (`yaml` or `ini`) and a part of what its refusal says."""

    text: str
    form: str
    expected: str


def alias_bomb(levels: int) -> str:
    """Groups whose children repeat the level below eight times: 8**levels group entries."""
    text = "all:\n  children:\n    g0: &g0 {hosts: {h1: }}\n"
    for level in range(1, levels + 1):
        children = ", ".join(f"c{level}_{j}: *g{level - 1}" for j in range(8))
        text += f"    g{level}: &g{level} {{children: {{{children}}}}}\n"
    return text


def range_bomb(repeats: int) -> str:
    """A group of 10,000 hosts by one range, repeated as the child of another `repeats` times."""
    children = ", ".join(f"c{i}: *g0" for i in range(repeats))
    group = "    g0: &g0 {hosts: {'h[0:9999]': }}\n"
    return f"all:\n  children:\n{group}    g1: {{children: {{{children}}}}}\n"


HOSTILE_INVENTORIES: dict[str, Hostile] = {
    "bomb": Hostile(alias_bomb(12), "yaml", "more than 100000 group and host entries"),
    "range-bomb": Hostile(range_bomb(50), "yaml", "more than 100000 group and host entries"),
    "loop": Hostile("all: &a\n  children:\n    x: *a\n", "yaml", "cannot be its own"),
    "deep-flow": Hostile("a: " + "[" * 50_000, "yaml", "not valid YAML"),
    "python-tag": Hostile(
        "all: !!python/object/apply:os.system ['touch /tmp/pwned']\n",
        "yaml",
        "could not determine a constructor",
    ),
    "list": Hostile("- web\n- db\n", "yaml", "expected a mapping of group names"),
    "list-key": Hostile("web:\n  hosts:\n    1:\n    ? [a, b]\n    : x\n", "yaml", "unhashable"),
    "key": Hostile("web:\n  hosts:\n    1:\n    ~:\n", "yaml", "a host's name is text"),
    "typo": Hostile("web:\n  host:\n    a:\n", "yaml", "unknown key 'host'"),
    "seq": Hostile("web:\n  hosts: [a, b]\n", "yaml", "expected a mapping, got list"),
    "var": Hostile("web:\n  vars: {1: x}\n", "yaml", "a variable's name is text"),
    "range": Hostile("web:\n  hosts:\n    w[0:99999999]:\n", "yaml", "more than 10000 hosts"),
    "backwards": Hostile("[web]\nw[9:1]\n", "ini", "runs backwards"),
    "section": Hostile("[web\nw1\n", "ini", "is not [group], [group:vars]"),
    "quote": Hostile("[web]\nw1 'unclosed\n", "ini", "line 2: No closing quotation"),
    "ini-var": Hostile("[web]\nw1 port\n", "ini", "expected key=value after the host"),
    "cycle": Hostile("[a:children]\nb\n[b:children]\na\n", "ini", "own descendant"),
    "deep-ini": Hostile(
        "".join(f"[g{i}:children]\ng{i + 1}\n" for i in range(40)),
        "ini",
        "children nested more than 32 deep",
    ),
    "empty": Hostile("# nothing\n", "ini", "the inventory names no hosts"),
    "too-large": Hostile("#" * (MAX_INVENTORY_BYTES + 1), "yaml", "larger than 4 MiB"),
}
"""Each hostile or broken inventory by name."""
