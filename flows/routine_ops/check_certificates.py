"""check-certificates: report TLS certificates and certificate files close to expiry.

Findings go as events into the desk's intake, so triage opens an incident before one lapses.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from prefect import flow

from opsflow.errors import PermanentError
from opsflow.flows.routine_ops import common
from opsflow.tasks.certificates import (
    Certificate,
    CertificateFile,
    TlsEndpoint,
    classify_expiry,
    read_certificate_file,
    read_endpoint_certificate,
)
from opsflow.tasks.desk_intake import DESK_TOKEN_BLOCK, DeskEvent
from opsflow.tasks.fanout import map_calls, raise_failures
from opsflow.tasks.inventory import read_estate

CERT_SOURCE = "opsflow-certificates"
CERT_SYMPTOM = "certificate-expiring"


def certificate_event(
    cert: Certificate, days_left: float, severity: Literal["warning", "critical"], at: datetime
) -> DeskEvent:
    """The event a certificate finding becomes (`severity` warning or critical)."""
    when = (
        f"expired {-days_left:.1f} days ago"
        if days_left < 0
        else f"expires in {days_left:.1f} days"
    )
    return DeskEvent(
        source=CERT_SOURCE,
        fingerprint=f"certificate/{cert.host}/{cert.target}"[:128],
        host=cert.host,
        service=cert.service,
        severity=severity,
        summary=f"certificate {cert.subject} ({cert.target}) on {cert.host} {when}, "
        f"at {cert.not_after:%Y-%m-%d %H:%M} UTC",
        labels={
            "alertname": "CertificateExpiry",
            "symptom": CERT_SYMPTOM,
            "target": cert.target,
            "subject": cert.subject,
            "not_after": cert.not_after.isoformat(),
            "days_left": f"{days_left:.1f}",
        },
        occurred_at=at,
    )


@flow(name="check-certificates")
def check_certificates(
    endpoints: list[TlsEndpoint] | None = None,
    files: list[CertificateFile] | None = None,
    estate_dir: str | None = None,
    warn_days: float = 30.0,
    critical_days: float = 7.0,
    send_to_desk: bool = True,
    desk_url: str | None = None,
    desk_token_block: str = DESK_TOKEN_BLOCK,
) -> list[dict[str, Any]]:
    """Read when services' TLS certificates and certificate files expire; report to the desk.

    A certificate within `warn_days` is sent as a warning event, within `critical_days`
    (or expired) as a critical one, which triage turns into an incident; one renewed while
    its incident is open is sent as resolved.

    Args:
        endpoints: TLS ports to read, each naming an inventory host and its service.
        files: Certificate files (PEM or DER) on inventory hosts.
        estate_dir: Estate directory; default the configured one.
        warn_days: Days left at or under which a certificate is a warning.
        critical_days: Days left at or under which it is an exception (an incident).
        send_to_desk: Post the findings to the desk's event intake.
        desk_url: The desk; default `OPSFLOW_DESK_URL`.
        desk_token_block: Secret block holding the desk token jobs post events with.
    """
    estate = read_estate(estate_dir)
    limit = estate.settings.ssh_concurrency
    try:
        calls = [(estate.host(e.host), {"endpoint": e}) for e in endpoints or []]
        file_calls = [(estate.host(f.host), {"cert_file": f}) for f in files or []]
    except KeyError as exc:
        raise PermanentError(str(exc)) from None
    outcomes = map_calls(read_endpoint_certificate, calls, limit)
    outcomes += map_calls(read_certificate_file, file_calls, limit)
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    firing: list[DeskEvent] = []
    cleared: list[DeskEvent] = []
    for outcome in outcomes:
        if not outcome.ok or outcome.result is None:
            continue
        cert: Certificate = outcome.result
        days = cert.days_left(now)
        verdict = classify_expiry(days, warn_days, critical_days)
        severity: Literal["warning", "critical"] = (
            "critical" if verdict == "exception" else "warning"
        )
        event = certificate_event(cert, days, severity, now)
        (cleared if verdict == "ok" else firing).append(event)
        rows.append(
            {
                "host": cert.host,
                "service": cert.service or "",
                "target": cert.target,
                "subject": cert.subject,
                "not_after": f"{cert.not_after:%Y-%m-%d %H:%M}",
                "days_left": round(days, 1),
                "class": verdict,
            }
        )
    counts = {c: sum(r["class"] == c for r in rows) for c in ("exception", "warning", "ok")}
    common.publish_table(
        "check-certificates",
        sorted(rows, key=lambda r: r["days_left"]),
        outcomes,
        f"{len(rows)} certificates: {counts['exception']} expire within "
        f"{critical_days:g} days (incidents), {counts['warning']} within {warn_days:g} days "
        f"(warnings), {counts['ok']} fine"
        + (
            f"; {len(outcomes) - len(rows)} could not be read."
            if len(rows) < len(outcomes)
            else "."
        )
        + (" Findings are reported to the desk as events." if send_to_desk else ""),
    )
    if send_to_desk:
        common.report_findings(firing, cleared, [CERT_SYMPTOM], desk_url, desk_token_block)
    raise_failures("certificate check", outcomes)
    return rows
