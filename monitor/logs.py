"""Log lines of the daemon: plain text with UTC timestamps, or one JSON object each.

The daemon logs one line per lifecycle event (started, pass started, pass
finished, alert raised, lease held elsewhere, stopping, stopped). A call site
names the event and its fields with :func:`event`, so the plain line stays a
sentence for people while ``--log-format json`` gives collectors the fields:

    logger.info("pass %s started", run_id, extra=event("pass_started", run=run_id))

Lines go to stderr, where systemd's journal and container runtimes collect them.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal

logger = logging.getLogger(__name__)

LogFormat = Literal["plain", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("plain", "json")
# The daemon's own lifecycle lines; everything else shows from WARNING up.
LIFECYCLE_LOGGERS = ("monitor.scheduler", "monitor.lease")


def event(name: str, **fields: Any) -> dict[str, Any]:
    """The ``extra`` of a lifecycle log call: the event name and its fields."""
    return {"event": name, "fields": fields}


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class PlainFormatter(logging.Formatter):
    """``2026-12-03T13:04:05.123Z INFO    monitor.scheduler: pass ... started``"""

    def format(self, record: logging.LogRecord) -> str:
        line = (
            f"{_timestamp(record)} {record.levelname:<7} {record.name}: "
            f"{record.getMessage()}"
        )
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)

        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, event, fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        name = getattr(record, "event", None)
        if name is not None:
            line["event"] = name
            line.update(getattr(record, "fields", {}))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)

        return json.dumps(line, default=str, ensure_ascii=False)


def configure_logging(
    log_format: LogFormat = "plain", *, lifecycle_level: int = logging.INFO
) -> None:
    """Send log lines to stderr in ``log_format``; lifecycle loggers at
    ``lifecycle_level``, the rest (libraries included) from WARNING."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else PlainFormatter())

    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    for name in LIFECYCLE_LOGGERS:
        logging.getLogger(name).setLevel(lifecycle_level)
    # The scheduler's listener reports missed and coalesced ticks itself.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
