"""Turn values from drivers and file readers into JSON-friendly ones."""

from __future__ import annotations

import base64
import json
import math
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any
from uuid import UUID

import orjson


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


_FAST_OPTIONS = (
    orjson.OPT_APPEND_NEWLINE
    | orjson.OPT_PASSTHROUGH_DATETIME  # dates through json_default: same text as `dumps`
    | orjson.OPT_PASSTHROUGH_DATACLASS  # like `dumps`: not JSON unless json_default says so
)
# OPT_NON_STR_KEYS makes orjson ~60% slower even when every key is a string (as in every
# decoded record), so it is only the second attempt: the text is the same either way.
_ORJSON_OPTIONS = _FAST_OPTIONS | orjson.OPT_NON_STR_KEYS
# Lines the fast encoder cannot write (integers beyond 64 bits, nesting deeper than 255, lone
# surrogates) are written by the standard library with this leading space; `loads_line` reads
# them back with the standard library too, which keeps big integers exact.
_SLOW_MARK = b" "


def dumps_line(record: Any) -> bytes:
    """One JSON line as UTF-8 bytes ending in a newline, for staging; reads with `loads_line`.

    orjson (~10x faster than `json`) with `json_default` for non-JSON types; NaN/Infinity
    become null as in `dumps`. Raises TypeError for values nothing can serialise, and
    RecursionError for records nested deeper than the interpreter's recursion limit.
    """
    try:
        return orjson.dumps(record, default=json_default, option=_FAST_OPTIONS)
    except TypeError:  # orjson.JSONEncodeError is a TypeError; e.g. a key that is not a str
        pass
    try:
        return orjson.dumps(record, default=json_default, option=_ORJSON_OPTIONS)
    except TypeError:
        pass
    try:
        text = dumps(record)
        return _SLOW_MARK + text.encode("utf-8") + b"\n"
    except UnicodeEncodeError:  # lone surrogates: escape them
        text = json.dumps(_without_nan(record), default=json_default, ensure_ascii=True)
        return _SLOW_MARK + text.encode("ascii") + b"\n"


def loads_line(line: bytes) -> Any:
    """The value of one line written by `dumps_line` (or any JSON line); ValueError if bad."""
    if line[:1] != _SLOW_MARK:
        try:
            return orjson.loads(line)
        except orjson.JSONDecodeError:
            pass
    try:
        return json.loads(line)
    except RecursionError as exc:
        raise ValueError("nested too deeply to decode") from exc
