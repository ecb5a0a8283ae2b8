"""What tests share: waiting, serving apps and processes, factories of records, real daemons.

One module per concern: `waiting` (polling instead of sleeping), `serving` (free ports, an app
served by uvicorn in a thread, desk and worker processes), `factories` (alerts, incidents,
stand-ins), `prefect_api` (what the Prefect server recorded), `metrics` (Prometheus pages),
`postgres` (the session's throwaway cluster), `alerting` (Prometheus and Alertmanager of a
test's own, and the lab's pointed at a desk), `inventories` (hostile Ansible inventories).
"""

from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
"""The repository's root."""
