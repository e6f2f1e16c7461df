from __future__ import annotations

import logging

import pytest

from switchyard.logfmt import TextFormatter


@pytest.mark.parametrize(
    "created", [[1700000000.123, 1700000000.999, 1700000001.0005, 1700000001.5, 1700000003.25]]
)
def test_text_timestamps_match_loggings_own(created: list[float]) -> None:
    ours = TextFormatter()
    stock = logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    for t in created:  # same second twice, then new seconds: the cached date must follow
        record = logging.LogRecord("switchyard", logging.INFO, __file__, 1, "msg", None, None)
        record.created = t
        record.msecs = float(int((t - int(t)) * 1000))
        assert ours.formatTime(record) == stock.formatTime(record)


def test_text_lines_carry_extras_after_the_message() -> None:
    record = logging.LogRecord("switchyard", logging.INFO, __file__, 1, "chat completed", None, None)
    record.request_id = "r1"
    record.ttft_ms = 1.5
    line = TextFormatter().format(record)
    assert line.endswith("INFO switchyard chat completed request_id=r1 ttft_ms=1.5")
