from __future__ import annotations

from router.metrics import RouterMetrics


def test_cached_children_count_into_the_labelled_series() -> None:
    m = RouterMetrics()
    assert m.routed_by("edge") is m.routed_by("edge")
    m.routed_by("edge").inc()
    m.routed_by("edge").inc(2)
    m.ttft_by("cloud").observe(0.003)
    text = m.render().decode()
    assert 'switchyard_routed_total{target="edge"} 3.0' in text
    assert 'switchyard_ttft_seconds_count{target="cloud"} 1.0' in text
    assert 'switchyard_ttft_seconds_bucket{le="0.005",target="cloud"} 1.0' in text
