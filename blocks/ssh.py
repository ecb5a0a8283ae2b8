"""The SSH credentials block: who opsflow logs in as, with which key, trusting which host keys."""

from __future__ import annotations

import base64
import io

import paramiko
from prefect.blocks.core import Block
from pydantic import Field, PrivateAttr, SecretStr

CONNECT_TIMEOUT_S = 10.0
"""Upper bound for TCP connect, SSH banner and authentication, each."""

_KEY_CLASSES: tuple[type[paramiko.PKey], ...] = (
    paramiko.Ed25519Key,
    paramiko.ECDSAKey,
    paramiko.RSAKey,
)


class SshCredentials(Block):
    """Logs in to hosts over SSH with a private key; host keys must be pinned, never learned."""

    _block_type_name = "opsflow SSH credentials"
    _block_type_slug = "opsflow-ssh-credentials"
    _description = "Private key (and passphrase) opsflow uses to log in to hosts over SSH."

    username: str = Field(
        default="root",
        title="Username",
        description="Account to log in as when the inventory does not name one for the host.",
    )
    private_key: SecretStr = Field(
        title="Private key",
        description="OpenSSH private key (ed25519, ECDSA or RSA), PEM text.",
    )
    passphrase: SecretStr | None = Field(
        default=None,
        title="Passphrase",
        description="Passphrase of the private key, if it has one.",
    )
    known_hosts: str | None = Field(
        default=None,
        title="Known hosts",
        description="known_hosts lines trusted in addition to the keys pinned in the inventory.",
    )

    _parsed: tuple[tuple[str, str | None], paramiko.PKey] | None = PrivateAttr(default=None)

    def load_key(self) -> paramiko.PKey:
        """Parse the private key; ValueError (naming no secret) when it is not a usable key."""
        password = self.passphrase.get_secret_value() if self.passphrase else None
        text = self.private_key.get_secret_value()
        for key_class in _KEY_CLASSES:
            try:
                return key_class.from_private_key(io.StringIO(text), password=password)
            except paramiko.PasswordRequiredException:
                raise ValueError(
                    "private_key: the key is encrypted and no passphrase is set"
                ) from None
            except paramiko.SSHException:
                continue
        raise ValueError("private_key: not an ed25519, ECDSA or RSA private key in OpenSSH format")

    def _parsed_key(self) -> paramiko.PKey:
        """The key, parsed once while the fields hold the same key: a fan-out opens a
        connection per host, and parsing costs ~0.5 ms each time."""
        source = (
            self.private_key.get_secret_value(),
            self.passphrase.get_secret_value() if self.passphrase else None,
        )
        if self._parsed is None or self._parsed[0] != source:
            self._parsed = (source, self.load_key())
        return self._parsed[1]

    def get_client(
        self,
        hostname: str,
        port: int = 22,
        username: str | None = None,
        host_key: str | None = None,
        timeout: float = CONNECT_TIMEOUT_S,
    ) -> paramiko.SSHClient:
        """Connect and authenticate; the result is usable in `with` and closes on exit.

        Only `host_key` (an OpenSSH public key line) and the block's known_hosts are trusted;
        any other key is refused before authentication (`paramiko.BadHostKeyException`).
        """
        client = paramiko.SSHClient()
        keys = client.get_host_keys()
        if self.known_hosts:
            for line in self.known_hosts.splitlines():
                entry = paramiko.hostkeys.HostKeyEntry.from_line(line)
                if entry is not None:
                    for name in entry.hostnames:
                        keys.add(name, entry.key.get_name(), entry.key)
        if host_key:
            key_type, blob = host_key.split()[:2]
            key = paramiko.PKey.from_type_string(key_type, base64.b64decode(blob))
            name = hostname if port == 22 else f"[{hostname}]:{port}"
            keys.add(name, key_type, key)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(
                hostname,
                port=port,
                username=username or self.username,
                pkey=self._parsed_key(),
                timeout=timeout,
                banner_timeout=timeout,
                auth_timeout=timeout,
                channel_timeout=timeout,
                allow_agent=False,
                look_for_keys=False,
            )
        except BaseException:
            client.close()
            raise
        return client
