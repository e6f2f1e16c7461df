"""Log formatting: plain text for people, one JSON object a line for log pipelines.

Fields passed with ``extra=`` (request ids, routes, timings) are kept as structured fields in
JSON and appended as ``key=value`` in text. Nothing here adds prompt text: callers never pass it.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            **_extras(record),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")
        self._stamp = (-1, "")  # (second, its date): one reference, swapped whole (threads log too)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        # The router logs a line per request: format the date once a second, not once a line.
        second = int(record.created)
        cached, stamp = self._stamp
        if second != cached:
            stamp = time.strftime(self.default_time_format, self.converter(second))
            self._stamp = (second, stamp)
        return f"{stamp},{int(record.msecs):03d}"  # logging's default_msec_format

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extras = _extras(record)
        if extras:
            text += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        return text


def configure(level: str, fmt: str) -> None:
    # Neither format prints threads, processes or the calling source line, so do not collect them:
    # the logging HOWTO's "Optimization" settings, worth about 2 us on each line.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None  # no sys._getframe walk for the caller
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
