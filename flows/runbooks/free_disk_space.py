"""free-disk-space: a service's log filesystem is full; remove and compress old logs by policy."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NONE
from prefect.transactions import Transaction

from opsflow.errors import PermanentError
from opsflow.flows.runbooks import Diagnosis, Remediation, Runbook, keep_target, record_rollback
from opsflow.inventory.models import Host, Service
from opsflow.tasks.logs import in_log_dir
from opsflow.tasks.ssh import execute


def _log_dir(service: Service) -> str:
    if not service.log_dir:
        raise PermanentError(f"service {service.name} has no log_dir in the inventory")
    return service.log_dir


def used_percent(host: Host, directory: str) -> int:
    """How full the filesystem holding `directory` is, from `df -P`."""
    result = execute(host, ["df", "-P", directory], timeout_s=30)
    return int(result.stdout.strip().splitlines()[-1].split()[4].rstrip("%"))


@task(cache_policy=NONE, timeout_seconds=120, task_run_name="diagnose[{service.name}@{host.name}]")
def diagnose(host: Host, service: Service) -> Diagnosis:
    """Measure the filesystem and list the largest files under the log directory."""
    directory = _log_dir(service)
    largest = execute(
        host, ["sh", "-c", 'du -a -k "$1" | sort -rn | head -n 10', "sh", directory], check=False
    )
    used = used_percent(host, directory)
    return Diagnosis(
        summary=f"{directory} on {host.name} is {used}% full",
        facts={"used_percent": str(used), "largest_kb": largest.stdout.strip()},
    )


@task(
    cache_policy=NONE, timeout_seconds=300, task_run_name="clean_logs[{service.name}@{host.name}]"
)
def remediate(host: Host, service: Service) -> Remediation:
    """Delete rotated logs past retention, compress younger rotated logs; the live log stays."""
    directory, policy = _log_dir(service), service.log_policy
    keep_target(host, service)
    find = ["find", directory, "-maxdepth", "1", "-type", "f", "-name", policy.pattern]
    # Both as the directory's keeper: gzip follows a file swapped for a link after find saw it.
    deleted = execute(
        host,
        in_log_dir(
            directory, [*find, "-mtime", f"+{policy.delete_after_days - 1}", "-print", "-delete"]
        ),
    ).stdout.split()
    compressed = (
        execute(
            host,
            in_log_dir(
                directory,
                [
                    *find,
                    "!",
                    "-name",
                    "*.gz",
                    "-mtime",
                    f"+{policy.compress_after_days - 1}",
                    "-print",
                    "-exec",
                    "gzip",
                    "-f",
                    "{}",
                    "+",
                ],
            ),
        ).stdout.split()
        if policy.compress_after_days
        else []
    )
    actions = [f"deleted {len(deleted)} rotated logs older than {policy.delete_after_days} days"]
    actions += [f"compressed {len(compressed)} rotated logs"]
    if not (deleted or compressed):
        due = "no rotated log due for deletion or compression"
        return Remediation.unchanged(host.name, "clean_logs", directory, due, actions=actions)
    return Remediation.made(
        host.name,
        "clean_logs",
        directory,
        "; ".join(actions),
        actions=actions,
        output="\n".join(deleted + compressed)[-1000:],
    )


@remediate.on_rollback
def report_cleanup(transaction: Transaction) -> None:
    """Deleted logs cannot come back and compression is harmless: record that nothing is undone."""
    host, service = transaction.get("target")
    record_rollback(
        transaction,
        f"log clean-up on {host.name} left as is (deletions follow {service.name}'s log policy)",
    )


def disk_ok(host: Host, service: Service) -> tuple[bool, str]:
    """Whether the log filesystem is back under the policy's threshold."""
    used = used_percent(host, _log_dir(service))
    limit = service.log_policy.max_used_percent
    return used < limit, f"{service.log_dir} {used}% used (limit {limit}%)"


RUNBOOK = Runbook(
    name="free-disk-space",
    description="Free the service's log filesystem by its log policy, then verify.",
    diagnose=diagnose,
    remediate=remediate,
    verify_disk=True,
)
