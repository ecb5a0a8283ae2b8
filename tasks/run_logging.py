"""The logger of the flow or task run this code runs in, or a module's own outside any run:
the same code is a task in a flow and a plain call (`.fn`) in a test or another task."""

from __future__ import annotations

import logging

from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger


def run_logger(fallback: str) -> logging.Logger | logging.LoggerAdapter:
    """The run's logger (its lines go to the run in the UI); outside a run, logger `fallback`."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(fallback)
