"""Read which packages a Debian host could upgrade, from apt's own view of its package lists."""

from __future__ import annotations

import re

from prefect import task
from prefect.cache_policies import NONE
from pydantic import BaseModel, Field

from opsflow.inventory.models import Host
from opsflow.tasks.retry import RETRY_TRANSIENT
from opsflow.tasks.ssh import execute

_LINE = re.compile(
    r"^(?P<name>[^/\s]+)/(?P<suites>\S+) (?P<candidate>\S+) (?P<arch>\S+) "
    r"\[upgradable from: (?P<current>[^\]]+)\]"
)

LIST_MAX_BYTES = 16 << 20
"""Bound on apt's answer: far beyond any real list, and a loud failure rather than a cut one."""

_SCRIPT = """apt list --upgradable 2>/dev/null || exit 3
echo --opsflow-lists--
stat -c %Y /var/lib/apt/lists 2>/dev/null || echo unknown
date +%s
"""
"""One round trip: the list, the age of the package lists it was computed from, the clock."""


class Upgradable(BaseModel):
    """One package with a newer version available."""

    name: str
    current: str
    candidate: str
    arch: str
    suites: list[str]
    security: bool = Field(description="The candidate comes from a security suite.")


class PatchStatus(BaseModel):
    """A host's upgradable packages, and how fresh the package lists behind the answer are."""

    host: str
    packages: list[Upgradable]
    lists_age_h: float | None = Field(description="Hours since apt's lists were updated.")

    @property
    def security(self) -> list[Upgradable]:
        """The upgrades that fix security issues."""
        return [p for p in self.packages if p.security]


def parse_upgradable(output: str) -> list[Upgradable]:
    """The packages `apt list --upgradable` names; its "Listing..." header is skipped."""
    packages = []
    for line in output.splitlines():
        match = _LINE.match(line.strip())
        if match is None:
            continue
        suites = match["suites"].split(",")
        packages.append(
            Upgradable(
                name=match["name"],
                current=match["current"],
                candidate=match["candidate"],
                arch=match["arch"],
                suites=suites,
                security=any(s.endswith("-security") or s == "security" for s in suites),
            )
        )
    return sorted(packages, key=lambda p: p.name)


@task(
    cache_policy=NONE,
    **RETRY_TRANSIENT,
    timeout_seconds=300,
    task_run_name="read_upgradable_packages[{host.name}]",
)
def read_upgradable_packages(host: Host) -> PatchStatus:
    """Ask apt on the host which installed packages have a newer candidate (reads only)."""
    result = execute(host, ["sh", "-c", _SCRIPT], timeout_s=240, max_output_bytes=LIST_MAX_BYTES)
    listing, _, stamps = result.stdout.partition("--opsflow-lists--\n")
    age = None
    fields = stamps.split()
    if len(fields) == 2 and fields[0].isdigit() and fields[1].isdigit():
        age = round((int(fields[1]) - int(fields[0])) / 3600, 1)
    return PatchStatus(host=host.name, packages=parse_upgradable(listing), lists_age_h=age)
