"""How the command-line entry points (``train.py``, ``evaluate.py``, ``mine.py``, ``python report.py``)
report an expected error: a :class:`~hybrid_ir.utils.errors.ConfigError`,
:class:`~hybrid_ir.utils.errors.DataError` or :class:`~hybrid_ir.utils.errors.DownloadError` is the user's to fix,
and its message says how, so it is printed alone
(``Error: <message>``, exit status 1), without the traceback of the code that found it. Any other exception is a
bug and keeps its traceback. ``HYDRA_FULL_ERROR=1`` (Hydra's own switch) shows the full traceback of an expected
error too.

See docs/reliability.md."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException

from hybrid_ir.utils.errors import ConfigError, DataError, DownloadError

P = ParamSpec("P")
R = TypeVar("R")
FULL_ERROR_ENV = "HYDRA_FULL_ERROR"


class ExpectedError(CompactHydraException):
    """An expected error on its way out of a Hydra job: Hydra prints a compact exception's message without a
    traceback (and, in a sweep, after the other jobs have run) and exits with status 1."""


def expected_error(exc: BaseException) -> ConfigError | DataError | DownloadError | None:
    """The :class:`ConfigError` / :class:`DataError` / :class:`DownloadError` behind ``exc``: ``exc`` itself or an
    explicit cause of it (``raise ... from``; Hydra's ``instantiate`` wraps what a constructor raises in an
    ``InstantiationException`` that way); ``None`` when there is none. An error raised while handling another
    (an implicit ``__context__``) is not followed: that is a new, unexpected failure."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ConfigError | DataError | DownloadError):
            return current
        seen.add(id(current))
        current = current.__cause__
    return None


def full_error_wanted() -> bool:
    """Whether the user asked for full tracebacks (``HYDRA_FULL_ERROR=1``)."""
    return os.environ.get(FULL_ERROR_ENV, "") == "1"


def report_expected_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Decorate an entry point's main function (under ``@hydra.main`` for the Hydra scripts) so that an expected
    error is printed as ``Error: <message>`` and the process exits with status 1; unexpected exceptions, and every
    exception under ``HYDRA_FULL_ERROR=1``, propagate unchanged. Inside a Hydra job the message leaves as an
    :class:`ExpectedError` for Hydra to print (so a sweep still runs its other jobs first); elsewhere it is
    written to stderr here."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except Exception as exc:
            err = expected_error(exc)
            if err is None or full_error_wanted():
                raise
            message = f"Error: {err}"
            if HydraConfig.initialized():
                raise ExpectedError(message) from exc
            print(message, file=sys.stderr)
            raise SystemExit(1) from None

    return wrapper
