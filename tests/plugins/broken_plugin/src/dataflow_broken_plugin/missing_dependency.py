"""A connector whose module imports a package that is not installed."""

from __future__ import annotations

import dataflow_missing_dependency  # noqa: F401 - the point: this import fails


class BrokenSource:
    """Never reached."""
