"""Reading Prometheus text pages as data."""

from __future__ import annotations


def sample(metrics: str, name: str, **labels: str) -> float:
    """The value of the one sample called `name` with (at least) `labels` in a Prometheus
    text page, read by `prometheus_client`'s parser; fails when there is none or several."""
    from prometheus_client.parser import text_string_to_metric_families

    found = [
        s.value
        for family in text_string_to_metric_families(metrics)
        for s in family.samples
        if s.name == name and labels.items() <= s.labels.items()
    ]
    assert len(found) == 1, f"{len(found)} samples {name}{labels}"
    return found[0]
