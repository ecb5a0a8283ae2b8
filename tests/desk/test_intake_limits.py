"""Intake under hostile or heavy load, over real HTTP: bodies are bounded as they arrive,
strangers are refused before their body is read, and a full commit queue answers 503."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path

import pytest
import requests

from opsflow.desk.app import create_app
from opsflow.desk.estate import EstateCache
from opsflow.desk.middleware import MAX_BODY_BYTES
from opsflow.itsm.store.records import Records
from tests.support.factories import TOKENS, auth, stored_events, webhook_alert, webhook_body
from tests.support.metrics import sample
from tests.support.serving import serve_app
from tests.support.waiting import wait_for

WAITING_BOUND = 3
"""Events the served desk lets wait for their commit before it answers 503."""


@pytest.fixture
def served(store: Records, desk_estate: Path) -> Iterator[str]:
    """The desk app served by uvicorn on a free port, with a tiny commit queue."""
    app = create_app(store, EstateCache(desk_estate), max_waiting_events=WAITING_BOUND)
    with serve_app(app, log_level="error") as url:
        yield url


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _answer_while_sending(url: str, head: str, chunks: Iterator[bytes]) -> bytes:
    """Send a request's head, then its body chunk by chunk beside reading the answer's head.

    The body is never finished: an answer can only come from a desk that decided without
    reading it all. A desk that waits for the whole body fails the test at the timeout.
    """
    with socket.create_connection(("127.0.0.1", _port(url)), timeout=10) as sock:
        sock.sendall(head.encode())

        def send() -> None:
            for chunk in chunks:
                try:
                    sock.sendall(chunk)
                except OSError:  # the desk answered and closed, or stopped reading
                    return

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        received = b""
        try:
            while b"\r\n\r\n" not in received and (part := sock.recv(65536)):
                received += part
        except TimeoutError:
            pytest.fail(f"no answer while the body was still coming; got {received!r}")
        except ConnectionError:
            pass  # reset after its answer: what came before it counts
        finally:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sender.join(15)
        return received


def _chunked(size: int, count: int) -> Iterator[bytes]:
    """`count` chunks of `size` spaces each, in HTTP chunked framing, with no final chunk."""
    for _ in range(count):
        yield f"{size:x}\r\n".encode() + b" " * size + b"\r\n"


def _head(path: str, token: str | None, framing: str) -> str:
    lines = [f"POST {path} HTTP/1.1", "Host: desk", "Content-Type: application/json", framing]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    return "\r\n".join(lines) + "\r\n\r\n"


def test_chunked_body_over_the_limit_is_refused_as_it_arrives(served: str, store: Records) -> None:
    mib = 1024 * 1024
    head = _head("/api/v1/events", TOKENS["max"], "Transfer-Encoding: chunked")
    answer = _answer_while_sending(served, head, _chunked(mib, MAX_BODY_BYTES // mib + 4))
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert stored_events(store) == []


@pytest.mark.parametrize(
    "framing", ["Transfer-Encoding: chunked", f"Content-Length: {MAX_BODY_BYTES}"]
)
@pytest.mark.parametrize("token", [None, "nobody-knows-this"], ids=["no-token", "unknown-token"])
def test_stranger_is_refused_before_the_body_is_read(
    served: str, store: Records, framing: str, token: str | None
) -> None:
    head = _head("/api/v1/events/alertmanager", token, framing)
    # One small piece of the body is sent, then nothing: only an early answer can come.
    answer = _answer_while_sending(served, head, iter([b"5\r\n{    \r\n"]))
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert stored_events(store) == []


def _waiting(url: str) -> int:
    metrics = requests.get(f"{url}/metrics", timeout=10).text
    return int(sample(metrics, "opsflow_intake_waiting_events"))


def _webhook(*hosts: str) -> dict:
    alerts = [
        webhook_alert(fingerprint=f"{abs(hash(h)):016x}"[:16], labels={"host": h}) for h in hosts
    ]
    return {**webhook_body("firing.json"), "alerts": alerts}


def test_a_full_commit_queue_answers_503_and_stores_nothing_of_the_refused(
    served: str, store: Records
) -> None:
    post = lambda body: requests.post(  # noqa: E731
        f"{served}/api/v1/events/alertmanager", json=body, headers=auth("max"), timeout=30
    )
    held = threading.Event()
    release = threading.Event()

    def hold_the_writer() -> None:
        with store.db.write() as conn:
            if store.db.dialect == "postgresql":  # SQLite's writers queue on the store's own lock
                conn.exec_driver_sql("LOCK TABLE events IN EXCLUSIVE MODE")
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold_the_writer)
    holder.start()
    held.wait(10)
    try:
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(post, _webhook("a1", "a2"))
            wait_for(lambda: _waiting(served) == 2, 10, "the first webhook to wait")
            second = pool.submit(post, _webhook("b1"))
            wait_for(lambda: _waiting(served) == 3, 10, "the second webhook to wait")

            refused = post(_webhook("c1", "c2"))
            also_refused = post(_webhook("d1"))

            assert refused.status_code == 503, refused.text
            assert refused.headers["Retry-After"].isdigit()
            assert also_refused.status_code == 503
            release.set()
            assert first.result().status_code == 202
            assert second.result().status_code == 202
    finally:
        release.set()
        holder.join(30)
    assert sorted(e.labels["host"] for e in stored_events(store)) == ["a1", "a2", "b1"]
    assert _waiting(served) == 0
    again = post(_webhook("c1", "c2"))
    assert (again.status_code, again.json()["stored"]) == (202, 2)


def test_body_under_the_limit_in_chunks_is_stored(served: str, store: Records) -> None:
    body = json.dumps(_webhook("chunked1")).encode()
    answer = requests.post(
        f"{served}/api/v1/events/alertmanager",
        data=iter([body[:10], body[10:]]),
        headers={**auth("max"), "Content-Type": "application/json"},
        timeout=10,
    )
    assert answer.status_code == 202, answer.text
    assert [e.labels["host"] for e in stored_events(store)] == ["chunked1"]
