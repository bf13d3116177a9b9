"""User-facing errors.

Anything a user can cause by bad input (a wrong config value, a missing dataset, a foreign
checkpoint) raises a :class:`RobustlabError`. The command-line apps print its message without a
traceback and exit with code 2; ``HYDRA_FULL_ERROR=1`` shows the traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence


class RobustlabError(Exception):
    """Base class for errors caused by user input; the message names the problem and the fix."""


class ConfigError(RobustlabError, ValueError):
    """A config value is missing, unknown or out of range."""


class DataNotFoundError(RobustlabError, FileNotFoundError):
    """Dataset files are missing where they were expected."""


class CheckpointError(RobustlabError):
    """A checkpoint is missing, corrupt, or was not written by robustlab."""


def check(condition: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(message)


def closest(word: str, choices: Sequence[str]) -> str | None:
    """The choice most similar to ``word`` (difflib ratio >= 0.5), for a "did you mean"."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return close[0] if close else None
