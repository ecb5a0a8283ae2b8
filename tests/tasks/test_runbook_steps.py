"""A declared runbook's HTTP steps against a real HTTP server: retried only when idempotent,
credentials from a block and masked in what is kept, an answer read only to its bound."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from prefect import flow

from opsflow.errors import OpsError
from opsflow.inventory.models import Host
from opsflow.inventory.runbooks import StepAction
from opsflow.tasks.runbook_steps import (
    OUTPUT_CHARS,
    StepFailedError,
    StepResult,
    StepTransientError,
    perform_step,
)
from opsflow.tasks.ssh import MASK

pytestmark = pytest.mark.usefixtures("prefect_server")

TOKEN = "s3cr3t-admin-token-for-tests"
HOST = Host(name="web1", address="127.0.0.1", port=2222)


class Api(ThreadingHTTPServer):
    """Answers each request with the next status of `statuses` (then 200), and says back the
    Authorization header it got; counts the requests per method."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), ApiHandler)
        self.statuses: list[int] = []
        self.hits: dict[str, int] = {}
        self.big = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class ApiHandler(BaseHTTPRequestHandler):
    server: Api

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.server.hits[self.command] = self.server.hits.get(self.command, 0) + 1
        status = self.server.statuses.pop(0) if self.server.statuses else 200
        if self.server.big:
            body = b"x" * (8 << 20)
        else:
            body = f"you sent {self.headers.get('Authorization')}".encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(OSError):  # the client read what it wanted and hung up
            self.wfile.write(body)

    do_GET = do_PUT = do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def api() -> Iterator[Api]:
    server = Api()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


@pytest.fixture(scope="module")
def credentials(prefect_server) -> str:
    from opsflow.blocks.registration import register_block_types, save_http_credentials

    register_block_types()
    save_http_credentials("test-api", TOKEN)
    return "test-api"


def step(api: Api, method: str, **http: Any) -> StepAction:
    return StepAction.model_validate(
        {"name": "call", "http": {"method": method, "url": f"{api.url}/state", **http}}
    )


def run(action: StepAction, changes: bool = True) -> StepResult:
    @flow
    def one_step() -> StepResult:
        return perform_step("test: remediate[0] (call)", action, "remediate", changes, HOST, {})

    return one_step()


def test_an_idempotent_call_is_retried_after_transient_failures(api: Api) -> None:
    api.statuses = [503, 502]
    result = run(step(api, "PUT", body={"state": "serving"}))
    assert api.hits == {"PUT": 3}
    assert result.state == "made" and result.detail.endswith("/state: 200")


def test_a_post_is_tried_once(api: Api) -> None:
    api.statuses = [503]
    with pytest.raises(StepTransientError, match="status 503"):
        run(step(api, "POST", body={"state": "serving"}))
    assert api.hits == {"POST": 1}


def test_a_post_said_to_be_idempotent_is_retried(api: Api) -> None:
    api.statuses = [503]
    run(step(api, "POST", idempotent=True))
    assert api.hits == {"POST": 2}


def test_an_unexpected_status_that_will_not_pass_is_not_retried(api: Api) -> None:
    api.statuses = [404]
    with pytest.raises(StepFailedError, match=r"status 404 \(expected 200\)"):
        run(step(api, "GET"), changes=False)
    assert api.hits == {"GET": 1}


def test_credentials_come_from_the_block_and_are_masked_in_the_result(
    api: Api, credentials: str
) -> None:
    result = run(step(api, "GET", credentials=credentials), changes=False)
    assert result.output == f"you sent Bearer {MASK}"
    assert result.state == "unchanged"
    assert TOKEN not in result.model_dump_json()


def test_a_missing_block_is_named(api: Api) -> None:
    with pytest.raises(StepFailedError, match=r"http\.credentials: block 'no-such-block'"):
        run(step(api, "GET", credentials="no-such-block"), changes=False)
    assert api.hits == {}


def test_an_answer_is_read_only_to_its_bound(api: Api) -> None:
    api.big = True
    result = run(step(api, "GET"), changes=False)
    assert len(result.output) == OUTPUT_CHARS


def test_a_connection_refused_is_transient(api: Api) -> None:
    action = StepAction.model_validate(
        {"name": "call", "http": {"method": "POST", "url": "http://127.0.0.1:1/x"}}
    )
    with pytest.raises(OpsError, match="connection failed"):
        run(action)
