"""One error tree for the package: configuration, retriable and fatal errors."""

from __future__ import annotations

from dataclasses import dataclass


class DataflowError(Exception):
    """Root of every error this package raises on purpose."""


@dataclass(frozen=True)
class ConfigIssue:
    """One problem found in a route file, located to the line and column."""

    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"

    def to_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "message": self.message,
        }


class RouteConfigError(DataflowError):
    """A route file is invalid; carries every issue found, each with its location."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(issue) for issue in issues))


class SourceError(DataflowError):
    """A connector cannot read its source (missing file, unreachable database, ...)."""


class DestinationError(DataflowError):
    """A destination cannot accept records (unreachable, misconfigured, ...)."""


class RetriableError(DataflowError):
    """A failure worth retrying later (timeouts, 429, 5xx)."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class FatalError(DataflowError):
    """A failure that retrying cannot fix."""
