"""Turn values from drivers and file readers into JSON-friendly ones."""

from __future__ import annotations

import base64
import json
import math
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any
from uuid import UUID


def json_default(value: Any) -> Any:
    """``json.dumps`` fallback: dates as ISO 8601, decimals as numbers, bytes as base64."""
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal):
        if value == value.to_integral_value() and value.is_finite():
            return int(value)
        return float(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"value of type {type(value).__name__} is not JSON serialisable")


def dumps(record: Any) -> str:
    """One compact JSON line; NaN/Infinity become null so every reader can load it."""
    try:
        return json.dumps(record, default=json_default, ensure_ascii=False, allow_nan=False)
    except ValueError:
        return json.dumps(_without_nan(record), default=json_default, ensure_ascii=False)


def _without_nan(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _without_nan(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_without_nan(item) for item in value]
    return value
