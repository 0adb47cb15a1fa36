"""A module without the class its entry point names (``BrokenSink``)."""

from __future__ import annotations


class SomethingElse:
    """Not what the entry point asks for."""
