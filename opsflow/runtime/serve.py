"""Serve every deployment of `prefect.yaml` from this process: `python -m opsflow.runtime.serve`."""

from __future__ import annotations

from prefect import serve

from opsflow.runtime.project import read_deployments, to_runner_deployment


def serve_project() -> None:
    """Register and serve all deployments until interrupted."""
    deployments = [to_runner_deployment(spec) for spec in read_deployments()]
    serve(*deployments, print_starting_message=False)


if __name__ == "__main__":
    serve_project()
