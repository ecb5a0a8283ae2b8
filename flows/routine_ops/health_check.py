"""health-check: check every service on every host it runs on, every few minutes.

Failures go as events into the desk's intake, so triage turns them into incidents by the
same rules as any monitor; a recovery clears the incident that waits for it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import flow
from prefect.artifacts import create_table_artifact
from prefect.logging import get_run_logger

from opsflow.flows.routine_ops import common
from opsflow.tasks.desk_intake import DESK_TOKEN_BLOCK, DeskEvent
from opsflow.tasks.fanout import map_hosts, raise_failures
from opsflow.tasks.inventory import read_estate
from opsflow.tasks.services import HealthResult, check_service_health

HEALTH_SOURCE = "opsflow-health-check"
HEALTH_SYMPTOMS = ("service-down", "service-hung")


def health_event(result: HealthResult, at: datetime) -> DeskEvent:
    """The event a health check result becomes: firing when unhealthy, for clearing when not."""
    symptom = "service-hung" if "no answer within" in result.detail else "service-down"
    return DeskEvent(
        source=HEALTH_SOURCE,
        status="firing",
        fingerprint=f"health-check/{result.service}/{result.host}/{symptom}",
        host=result.host,
        service=result.service,
        severity="critical",
        summary=f"{result.service} on {result.host} failed its health check: {result.detail}",
        labels={"alertname": "HealthCheckFailed", "symptom": symptom, "check": "health-check"},
        occurred_at=at,
    )


def _clear_candidates(result: HealthResult, at: datetime) -> list[DeskEvent]:
    base = health_event(result, at)
    return [
        base.model_copy(
            update={
                "fingerprint": f"health-check/{result.service}/{result.host}/{symptom}",
                "labels": {**base.labels, "symptom": symptom},
                "summary": f"{result.service} on {result.host} passes its health check again",
            }
        )
        for symptom in HEALTH_SYMPTOMS
    ]


@flow(name="health-check", log_prints=False)
def health_check(
    estate_dir: str | None = None,
    hosts: list[str] | None = None,
    send_to_desk: bool = True,
    desk_url: str | None = None,
    desk_token_block: str = DESK_TOKEN_BLOCK,
) -> list[HealthResult]:
    """Check every service on every host it runs on; failures become events at the desk.

    Args:
        estate_dir: Estate directory; default the configured one.
        hosts: Only these hosts; default all.
        send_to_desk: Post failures (and recoveries an open incident waits for) to the
            desk's event intake, where triage opens incidents by the estate's rules.
        desk_url: The desk; default `OPSFLOW_DESK_URL`.
        desk_token_block: Secret block holding the desk token jobs post events with.
    """
    logger = get_run_logger()
    estate = read_estate(estate_dir)
    results: list[HealthResult] = []
    for service in estate.services:
        outcomes = map_hosts(
            check_service_health,
            common.hosts_of(estate, service, hosts),
            limit=estate.settings.ssh_concurrency,
            service=service,
        )
        raise_failures(f"health check of {service.name}", outcomes)
        results += [o.result for o in outcomes if o.result is not None]
    observed = datetime.now(UTC)
    failing = [r for r in results if not r.healthy]
    create_table_artifact(
        key="health-check",
        table=[r.model_dump() for r in results],
        description=(
            f"**{len(results) - len(failing)} of {len(results)} healthy.**"
            + (" Failures are reported to the desk as events." if send_to_desk else "")
            + "".join(f"\n- {r.service} on {r.host}: {r.detail}" for r in failing)
        ),
    )
    for result in failing:
        logger.warning("UNHEALTHY %s on %s: %s", result.service, result.host, result.detail)
    logger.info("%d of %d service instances healthy", len(results) - len(failing), len(results))
    if send_to_desk:
        stored, cleared = common.report_findings(
            [health_event(r, observed) for r in failing],
            [e for r in results if r.healthy for e in _clear_candidates(r, observed)],
            list(HEALTH_SYMPTOMS),
            desk_url,
            desk_token_block,
        )
        logger.info("desk stored %d new failure events; %d all-clears sent", stored, cleared)
    return results


if __name__ == "__main__":
    health_check()
