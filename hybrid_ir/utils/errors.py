"""Exception types with messages that say what is wrong and what is allowed. See docs/reliability.md."""

from __future__ import annotations


class DataError(ValueError):
    """A data file is malformed. The message names the file, the record (line or id) and what was expected."""

    def __init__(self, path: object, record: object, problem: str) -> None:
        self.path = str(path)
        self.record = record
        self.problem = problem
        super().__init__(f"{self.path}: {record}: {problem}")


class ConfigError(ValueError):
    """A configuration value is invalid. Raised at start-up, before any model is loaded."""


class DownloadError(RuntimeError):
    """A dataset the data root lacks could not be fetched from its public origin (no network, an HTTP error, a
    checksum mismatch). The message names the URL and how to put the files under the data root by hand."""
