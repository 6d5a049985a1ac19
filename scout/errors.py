"""Errors Scout raises on purpose. Each message names the offending value."""

from __future__ import annotations


class ScoutError(Exception):
    """Base of every error that the command line shows as one line."""


class ConfigError(ScoutError):
    """A setting or an input file is wrong; the message says which and how."""


class ModelError(ScoutError):
    """A model call failed after its retries, or its answer could not be used."""


class SourceError(ScoutError):
    """A source could not be searched or a page could not be read."""


class RunLimitError(ScoutError):
    """A run hit its recursion limit or worker-turn limit."""
