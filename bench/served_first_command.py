"""The baseline of `restore_latency`: the runbook's first command through Prefect's own path.

A served deployment (`first-command`) whose flow reads the estate and runs the service's
status command on a host over SSH, as the restart-service runbook's diagnosis does first.
`restore_latency` triggers it with `run_deployment` on the same Prefect server and times it
to the same command on the host. `python -m bench.served_first_command` serves it.
"""

from __future__ import annotations

from prefect import flow

DEPLOYMENT = "first-command/first-command"


@flow(name="first-command")
def first_command(host: str, service: str = "app") -> int:
    """Run `service`'s status command on `host`; its exit status.

    Imports inside: the runner pickles a flow of `__main__` by value with its globals, and
    the `read_estate` task holds a lock that cannot be pickled.
    """
    from opsflow.tasks.inventory import read_estate
    from opsflow.tasks.service_control import control_of
    from opsflow.tasks.ssh import execute

    estate = read_estate.fn()
    target = estate.host(host)
    service_spec = next(s for s in estate.services if s.name == service)
    return execute(target, control_of(service_spec).status, check=False, timeout_s=30).exit_status


if __name__ == "__main__":
    first_command.serve(name="first-command", print_starting_message=False)
