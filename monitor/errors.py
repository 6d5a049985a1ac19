"""Errors the monitor raises on purpose; the CLI prints each as one line."""

from __future__ import annotations

from scout.errors import ScoutError


class MonitorError(ScoutError):
    """Base of the monitor's errors; ``str(error)`` is the line the user sees."""


class GoldenError(MonitorError):
    """The golden set is missing or malformed; names the file, question and field."""


class DatabaseError(MonitorError):
    """The results database cannot be reached, or is not at the expected schema."""


class SchemaBehindError(DatabaseError):
    """The database is behind its migrations: `monitor db upgrade` fixes it."""


class NotFoundError(MonitorError):
    """An unknown run id or version; the message names the nearest known ones."""


class JudgeError(MonitorError):
    """The judge could not produce a valid grading for one report."""
