"""The log of an opsflow process: opsflow's own loggers at INFO, as text or as JSON lines.

Prefect configures logging when it is imported: its root handler passes only warnings, so
`logging.basicConfig` afterwards does nothing and opsflow's INFO lines were lost. Each
process (the desk's, a worker) therefore gives the `opsflow` logger, and uvicorn's, a handler
of its own on stderr (which `opsflow up` appends to the process's log file), leaving Prefect's
loggers as Prefect set them. `OPSFLOW_LOG_FORMAT=json` writes one JSON object per line, for
log shippers; the default is one line of text per record.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal

LogFormat = Literal["text", "json"]

OWN_LOGGERS = ("opsflow", "uvicorn")
"""The loggers given the handler: opsflow's, and uvicorn's start, stop and error lines
(`uvicorn.error`, a child). The desk turns uvicorn's access log off and writes its own
(`desk.access_log`), which leaves out what uvicorn's would show of a query string."""
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"

_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}
"""What every LogRecord carries (and uvicorn's copy of its message with terminal colours):
anything else on a record came as `extra=` and is a field."""


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, process, message,
    the fields passed as `extra=`, and the exception's traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON; values JSON cannot hold are written as text."""
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "process": record.process,
            "message": record.getMessage(),
        }
        line |= {k: v for k, v in vars(record).items() if k not in _RECORD_FIELDS}
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


_handler: logging.Handler | None = None


def configure_logging(log_format: LogFormat | None = None, level: int = logging.INFO) -> None:
    """Send opsflow's (and uvicorn's) records at `level` and above to stderr, in `log_format`
    (default: the `OPSFLOW_LOG_FORMAT` setting). Call it after Prefect is imported; calling it
    again replaces the handler rather than adding a second one."""
    global _handler
    if log_format is None:
        from opsflow.settings import get_settings

        log_format = get_settings().log_format
    handler = logging.StreamHandler(sys.stderr)
    text = logging.Formatter(TEXT_FORMAT)
    handler.setFormatter(JsonFormatter() if log_format == "json" else text)
    for name in OWN_LOGGERS:
        logger = logging.getLogger(name)
        if name == "uvicorn":
            logger.handlers.clear()  # Prefect gave it its console handler, at WARNING
        elif _handler is not None:
            logger.removeHandler(_handler)
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False
    _handler = handler
