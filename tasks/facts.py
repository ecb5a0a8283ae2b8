"""Read a host's facts (OS, kernel, uptime, load, memory, disks) over SSH and parse them."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NONE
from pydantic import BaseModel

from opsflow.inventory.models import Host
from opsflow.tasks.retry import RETRY_TRANSIENT
from opsflow.tasks.ssh import execute

SEPARATOR = "--opsflow-facts--"

FACTS_SCRIPT = f"""
. /etc/os-release 2>/dev/null; echo "$PRETTY_NAME"; echo {SEPARATOR}
uname -sr; echo {SEPARATOR}
cat /proc/uptime; echo {SEPARATOR}
cat /proc/loadavg; echo {SEPARATOR}
cat /proc/meminfo; echo {SEPARATOR}
df -P -k -x tmpfs -x devtmpfs -x overlay -x squashfs 2>/dev/null; df -P -k /var/log/app 2>/dev/null
"""
"""One round trip for every fact; the script is a constant, nothing is interpolated into it."""


class DiskUsage(BaseModel):
    """Use of one mounted filesystem."""

    mount: str
    size_kb: int
    used_kb: int
    used_percent: float


class HostFacts(BaseModel):
    """What a host reports about itself."""

    host: str
    os: str
    kernel: str
    uptime_s: float
    load: tuple[float, float, float]
    mem_total_kb: int
    mem_available_kb: int
    disks: list[DiskUsage]


def parse_facts(host: str, output: str) -> HostFacts:
    """Turn the output of `FACTS_SCRIPT` into `HostFacts`."""
    parts = [p.strip() for p in output.split(SEPARATOR)]
    if len(parts) != 6:
        raise ValueError(f"{host}: facts output has {len(parts)} sections, expected 6")
    os_name, kernel, uptime, loadavg, meminfo, df = parts
    memory = {}
    for line in meminfo.splitlines():
        name, _, value = line.partition(":")
        memory[name] = int(value.split()[0]) if value.split() else 0
    load = tuple(float(x) for x in loadavg.split()[:3])
    disks: dict[str, DiskUsage] = {}
    for line in df.splitlines():
        fields = line.split()
        if len(fields) < 6 or not fields[1].isdigit():
            continue
        size, used = int(fields[1]), int(fields[2])
        mount = " ".join(fields[5:])
        disks[mount] = DiskUsage(
            mount=mount,
            size_kb=size,
            used_kb=used,
            used_percent=round(100 * used / size, 1) if size else 0.0,
        )
    return HostFacts(
        host=host,
        os=os_name or "unknown",
        kernel=kernel,
        uptime_s=float(uptime.split()[0]),
        load=load,
        mem_total_kb=memory.get("MemTotal", 0),
        mem_available_kb=memory.get("MemAvailable", 0),
        disks=sorted(disks.values(), key=lambda d: d.mount),
    )


@task(
    cache_policy=NONE,
    **RETRY_TRANSIENT,
    timeout_seconds=120,
    task_run_name="read_host_facts[{host.name}]",
)
def read_host_facts(host: Host) -> HostFacts:
    """Gather one host's facts in a single SSH command."""
    result = execute(host, ["sh", "-c", FACTS_SCRIPT], timeout_s=30)
    return parse_facts(host.name, result.stdout)
