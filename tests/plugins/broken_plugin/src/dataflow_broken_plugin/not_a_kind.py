"""A class that loads but is no connector or destination (no ``settings_model``)."""

from __future__ import annotations


class NotAKind:
    """Not a subclass of Connector or Destination."""
