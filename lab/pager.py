"""A local stand-in for the on-call's pager: an HTTP receiver that writes each page to a file.

Real estates point their notification block at Slack, PagerDuty or e-mail, which cannot run
here; the lab points it at this, so escalations are seen end to end (`python -m opsflow.lab.pager`).
"""

from __future__ import annotations

import argparse
import json
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MAX_PAGE_BYTES = 1024 * 1024


class PagerServer(ThreadingHTTPServer):
    """Receives pages (any JSON POST) and appends them, time-stamped, to a JSON-lines file."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], log: Path) -> None:
        super().__init__(address, _PageHandler)
        self.log = log
        self.pages: list[dict] = []
        self.lock = threading.Lock()
        self.received = threading.Condition(self.lock)

    @property
    def url(self) -> str:
        """Where to POST pages."""
        host, port = self.socket.getsockname()[:2]
        return f"http://{host}:{port}/page"

    def wait_for(self, count: int, timeout_s: float) -> list[dict]:
        """Block until `count` pages arrived or the timeout passed; return what arrived."""
        with self.received:
            self.received.wait_for(lambda: len(self.pages) >= count, timeout_s)
            return list(self.pages)


class _PageHandler(BaseHTTPRequestHandler):
    server: PagerServer

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length > MAX_PAGE_BYTES:
            self.send_error(413)
            return
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {"raw": raw.decode("utf-8", "replace")}
        page = {"at": datetime.now(UTC).isoformat(), "path": self.path, "body": body}
        with self.server.received:
            self.server.pages.append(page)
            with self.server.log.open("a") as out:
                out.write(json.dumps(page) + "\n")
            self.server.received.notify_all()
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return


def main() -> None:
    """Receive pages on 127.0.0.1 until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=19099)
    parser.add_argument("--log", type=Path, required=True)
    args = parser.parse_args()
    PagerServer(("127.0.0.1", args.port), args.log).serve_forever()


if __name__ == "__main__":
    main()
