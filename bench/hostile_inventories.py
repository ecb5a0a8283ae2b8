"""Refusing hostile Ansible inventories: what each costs, against reading a real estate.

Each hostile or broken inventory of `tests/support/inventories.py` (alias and range bombs,
reference loops, deep nesting, a file over the size bound, ...) is read by
`inventory.ansible.hosts_from_ansible` until it refuses it. The baseline, in the same run:
reading an inventory of `--hosts` hosts (10,000, the largest inventory accepted), each with
its key in known_hosts. Target: none is dearer to refuse than the baseline is to read (ratio
<= 1.0), so an inventory written to hurt costs opsflow no more than the largest honest one.
The figure per inventory is the best of `--rounds`.

    .venv/bin/python -m bench.hostile_inventories [--rounds 3] [--hosts 10000]
"""

from __future__ import annotations

import argparse
import base64
import time
from collections.abc import Callable
from functools import partial

from bench.common import loadavg, wait_for_quiet, write_result

TARGET_RATIO = 1.0


def best_of(rounds: int, read: Callable[[], object]) -> float:
    """The shortest of `rounds` timed calls of `read`, in seconds."""
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        read()
        times.append(time.perf_counter() - started)
    return min(times)


def estate(hosts: int) -> tuple[str, str]:
    """An inventory of `hosts` hosts and the known_hosts text holding each one's key."""
    key = "ssh-ed25519 " + base64.b64encode(b"\x00\x00\x00\x0bssh-ed25519" + bytes(36)).decode()
    inventory = f"all:\n  hosts:\n    h[00000:{hosts - 1:05d}]:\n"
    return inventory, "".join(f"h{n:05d} {key}\n" for n in range(hosts))


def main() -> None:
    from opsflow.errors import InventoryError
    from opsflow.inventory.ansible import hosts_from_ansible
    from opsflow.inventory.known_hosts import KnownHosts
    from tests.support.inventories import HOSTILE_INVENTORIES

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="timed reads per inventory")
    parser.add_argument("--hosts", type=int, default=10_000, help="hosts of the baseline's estate")
    parser.add_argument(
        "--quiet-load",
        type=float,
        default=2.0,
        help="first wait (up to 5 min) for the 1-min load average to fall under this; 0: don't",
    )
    args = parser.parse_args()
    load_before = wait_for_quiet(args.quiet_load) if args.quiet_load else loadavg()

    inventory, known_text = estate(args.hosts)
    known = KnownHosts.parse(known_text)
    assert len(hosts_from_ansible(inventory, "yaml", known)) == len(known_text.splitlines())
    baseline = best_of(args.rounds, lambda: hosts_from_ansible(inventory, "yaml", known))
    print(f"baseline: {len(known_text.splitlines())} hosts read in {baseline * 1000:.1f} ms")

    def refuse(text: str, form: str) -> None:
        try:
            hosts_from_ansible(text, form, known)
        except InventoryError:
            return
        raise AssertionError("a hostile inventory was accepted")

    refusals: dict[str, dict[str, float]] = {}
    for name, hostile in HOSTILE_INVENTORIES.items():
        seconds = best_of(args.rounds, partial(refuse, hostile.text, hostile.form))
        refusals[name] = {"seconds": seconds, "ratio": seconds / baseline}
        print(f"{name}: refused in {seconds * 1000:.1f} ms ({seconds / baseline:.3f}x)")

    dearest = max(refusals, key=lambda name: refusals[name]["ratio"])
    ratio = refusals[dearest]["ratio"]
    verdict = "meets" if ratio <= TARGET_RATIO else "misses"
    line = (
        f"{len(refusals)} hostile inventories refused; the dearest, {dearest}, in "
        f"{refusals[dearest]['seconds'] * 1000:.1f} ms = {ratio:.3f}x reading "
        f"{len(known_text.splitlines())} hosts ({baseline * 1000:.1f} ms): {verdict} the "
        f"target (<= {TARGET_RATIO:g}x)"
    )
    print(line)
    write_result(
        "hostile_inventories",
        {
            "target_ratio": TARGET_RATIO,
            "rounds": args.rounds,
            "baseline_s": baseline,
            "refusals": refusals,
            "dearest": dearest,
            "load_before": load_before,
            "load_after": loadavg(),
        },
        line,
    )


if __name__ == "__main__":
    main()
