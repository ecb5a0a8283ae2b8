"""Read when certificates expire: those services present on TLS ports, and files on hosts."""

from __future__ import annotations

import socket
import ssl
import tempfile
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Literal

from cryptography import x509
from cryptography.x509.oid import NameOID
from prefect import task
from prefect.cache_policies import NONE
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from opsflow.errors import PermanentError, TransientError
from opsflow.inventory.models import Host
from opsflow.inventory.types import Port
from opsflow.tasks.files import fetch_file
from opsflow.tasks.retry import RETRY_TRANSIENT

CONNECT_TIMEOUT_S = 10.0
MAX_CERT_FILE_BYTES = 1 << 20

ExpiryClass = Literal["ok", "warning", "exception"]


class TlsEndpoint(BaseModel):
    """A TLS port of a service on an inventory host, checked from here like its health check."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(description="Inventory host name.")
    port: Port
    service: str | None = None
    server_name: str | None = Field(default=None, description="SNI name; default the host's.")


class CertificateFile(BaseModel):
    """A certificate file (PEM or DER) on an inventory host."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(description="Inventory host name.")
    path: str = Field(pattern=r"^/[^\x00\n]*$")
    service: str | None = None


class Certificate(BaseModel):
    """When the earliest-expiring certificate found at one place stops being valid."""

    host: str
    service: str | None
    target: str = Field(description='"tls ADDRESS:PORT" or "file PATH".')
    subject: str
    not_after: AwareDatetime
    certificates: int = Field(description="How many certificates the place presented.")

    def days_left(self, now: datetime) -> float:
        """Days until `not_after` (negative once expired)."""
        return (self.not_after - now).total_seconds() / 86400


def classify_expiry(days_left: float, warn_days: float, critical_days: float) -> ExpiryClass:
    """exception within `critical_days` (or expired), warning within `warn_days`, else ok."""
    if days_left <= critical_days:
        return "exception"
    if days_left <= warn_days:
        return "warning"
    return "ok"


def _subject(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else cert.subject.rfc4514_string() or "(no subject)"


def earliest(certs: list[x509.Certificate]) -> x509.Certificate:
    """The certificate that expires first: a chain is only as valid as its shortest link."""
    return min(certs, key=lambda c: c.not_valid_after_utc)


def parse_certificates(data: bytes, where: str) -> list[x509.Certificate]:
    """Every certificate in PEM `data`, or the one DER certificate it is."""
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            return x509.load_pem_x509_certificates(data)
        return [x509.load_der_x509_certificate(data)]
    except ValueError as exc:
        raise PermanentError(f"{where}: no certificate could be read: {exc}") from None


@task(
    cache_policy=NONE,
    **RETRY_TRANSIENT,
    timeout_seconds=60,
    task_run_name="read_endpoint_certificate[{host.name}:{endpoint.port}]",
)
def read_endpoint_certificate(host: Host, endpoint: TlsEndpoint) -> Certificate:
    """The certificate the endpoint presents in its TLS handshake."""
    address = host.address
    where = f"{address}:{endpoint.port}"
    # Expiry is what we check, not trust: an expired or self-signed certificate must
    # still be read, so the handshake verifies nothing and sends no data.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((address, endpoint.port), timeout=CONNECT_TIMEOUT_S) as raw,
            context.wrap_socket(raw, server_hostname=endpoint.server_name or host.name) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except (ConnectionError, TimeoutError) as exc:
        raise TransientError(f"{host.name}: TLS {where}: {exc}") from None
    except (ssl.SSLError, OSError) as exc:
        raise PermanentError(f"{host.name}: TLS {where}: handshake failed: {exc}") from None
    if not der:
        raise PermanentError(f"{host.name}: TLS {where}: no certificate presented")
    cert = x509.load_der_x509_certificate(der)
    return Certificate(
        host=host.name,
        service=endpoint.service,
        target=f"tls {where}",
        subject=_subject(cert),
        not_after=cert.not_valid_after_utc,
        certificates=1,
    )


@task(
    cache_policy=NONE,
    **RETRY_TRANSIENT,
    timeout_seconds=120,
    task_run_name="read_certificate_file[{host.name}:{cert_file.path}]",
)
def read_certificate_file(host: Host, cert_file: CertificateFile) -> Certificate:
    """The earliest expiry among the certificates of a file on the host (copied here, verified)."""
    path = PurePosixPath(cert_file.path)
    with tempfile.TemporaryDirectory(prefix="opsflow-cert-") as scratch:
        local = Path(scratch) / "cert"
        fetched = fetch_file.fn(host, str(path), local)
        if fetched.size > MAX_CERT_FILE_BYTES:
            raise PermanentError(f"{host.name}: {path} is {fetched.size} bytes: not a certificate")
        certs = parse_certificates(local.read_bytes(), f"{host.name}:{path}")
    first = earliest(certs)
    return Certificate(
        host=host.name,
        service=cert_file.service,
        target=f"file {path}",
        subject=_subject(first),
        not_after=first.not_valid_after_utc,
        certificates=len(certs),
    )
