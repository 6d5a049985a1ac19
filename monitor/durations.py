"""Durations on the command line: ``30s``, ``15m``, ``4h``, ``1d``, ``1h30m``.

The grammar is deliberately narrow, one or more ``<number><unit>`` parts with
units s, m, h, d, w, because a schedule that silently means something else
(``5`` read as five seconds, ``1:30`` as ninety) runs for months before anyone
notices. pytimeparse does the arithmetic once the shape has been checked.
"""

from __future__ import annotations

import logging
import re

from pytimeparse import parse as parse_seconds

from scout.errors import ConfigError

logger = logging.getLogger(__name__)

ACCEPTED_FORMS = "30s, 15m, 4h, 1d or combinations such as 1h30m"
_SHAPE = re.compile(r"(?:\d+(?:\.\d+)?[smhdw])+")


def parse_duration(text: str, *, option: str = "duration") -> float:
    """Seconds in ``text``; anything but a positive duration is a ConfigError
    that names the option, the value and the accepted forms."""
    compact = text.strip().lower().replace(" ", "")
    seconds = parse_seconds(compact) if _SHAPE.fullmatch(compact) else None
    if seconds is None or seconds <= 0:
        raise ConfigError(f"{option} {text!r} is not a duration: use {ACCEPTED_FORMS}")

    return float(seconds)


def format_duration(seconds: float) -> str:
    """The shortest ``1h30m`` form of a duration, for logs and status lines."""
    if seconds < 60 and seconds != int(seconds):
        return f"{seconds:g}s"

    remaining = round(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, remaining = divmod(remaining, size)
        if count:
            parts.append(f"{count}{unit}")

    return "".join(parts) or "0s"
