"""patch-report: each host's upgradable packages, security ones first, or that there are none."""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from opsflow.flows.routine_ops import common
from opsflow.tasks.fanout import map_hosts, raise_failures
from opsflow.tasks.inventory import read_estate
from opsflow.tasks.packages import PatchStatus, read_upgradable_packages


def patch_markdown(statuses: list[PatchStatus]) -> str:
    """The patch report: per host, the upgradable packages (security first), or none."""
    lines = ["# Patch report", ""]
    for status in statuses:
        age = f" (package lists {status.lists_age_h:g} h old)" if status.lists_age_h else ""
        if not status.packages:
            lines += [f"## {status.host}: none{age}", ""]
            continue
        lines += [
            f"## {status.host}: {len(status.packages)} upgradable, "
            f"{len(status.security)} security{age}",
            "",
            "| package | installed | candidate | suite |",
            "|---|---|---|---|",
        ]
        ordered = sorted(status.packages, key=lambda p: (not p.security, p.name))
        lines += [
            f"| {'**' + p.name + '**' if p.security else p.name} | {p.current} | {p.candidate} "
            f"| {', '.join(p.suites)} |"
            for p in ordered
        ]
        lines.append("")
    return "\n".join(lines)


@flow(name="patch-report")
def patch_report(
    estate_dir: str | None = None, hosts: list[str] | None = None
) -> list[PatchStatus]:
    """List each host's upgradable packages (security ones first), or say there are none.

    Args:
        estate_dir: Estate directory; default the configured one.
        hosts: Only these hosts; default all.
    """
    estate = read_estate(estate_dir)
    outcomes = map_hosts(
        read_upgradable_packages, common.hosts(estate, hosts), limit=estate.settings.ssh_concurrency
    )
    statuses = [o.result for o in outcomes if o.ok and o.result is not None]
    common.publish_table(
        "patch-report",
        [
            {
                "host": s.host,
                "upgradable": len(s.packages),
                "security": len(s.security),
                "packages": ", ".join(p.name for p in s.packages)[:1000] or "none",
                "lists_age_h": s.lists_age_h,
            }
            for s in statuses
        ],
        outcomes,
        f"{sum(bool(s.packages) for s in statuses)} of {len(statuses)} hosts "
        f"have upgrades ({sum(len(s.security) for s in statuses)} security).",
    )
    create_markdown_artifact(
        key="patch-report-detail", markdown=patch_markdown(statuses), description="Per host."
    )
    raise_failures("patch report", outcomes)
    return statuses
