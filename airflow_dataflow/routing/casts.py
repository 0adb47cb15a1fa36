"""Converters behind the `cast:` transform step; each raises ValueError with a short reason."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from airflow_dataflow.routing.values import comparable_number, is_number, parse_number

Caster = Callable[[Any], Any]
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean " + ("true" if value else "false")
    return repr(value)


def to_int(value: Any) -> int:
    """12, 12.0, "12", " 12 ", "12.0" -> 12; fractions, bools, null and text fail."""
    if value.__class__ is str and value.isascii() and value.isdigit() and len(value) < 4000:
        return int(value)  # the common case, without regular expressions
    number = parse_number(value) if isinstance(value, str) else value
    if isinstance(value, str) and number is None:
        raise ValueError(f"invalid literal {value!r}")
    if isinstance(number, int) and not isinstance(number, bool):
        return number
    if isinstance(number, float):
        if not math.isfinite(number) or not number.is_integer():
            raise ValueError(f"{_describe(value)} is not a whole number")
        return int(number)
    raise ValueError(f"cannot convert {_describe(value)}")


def to_float(value: Any) -> float:
    """Numbers and numeric strings -> float; anything else fails."""
    if is_number(value):
        return float(value)
    if isinstance(value, str):
        number = comparable_number(value)  # equal to parse_number's, as a float is enough
        if number is None:
            raise ValueError(f"invalid literal {value!r}")
        return float(number)
    raise ValueError(f"cannot convert {_describe(value)}")


def to_str(value: Any) -> str:
    """Strings stay; objects, arrays, bools and null become JSON text; numbers use str()."""
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, (bool, dict, list, tuple)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def to_bool(value: Any) -> bool:
    """true/false/1/0/yes/no (any case, as strings) and the numbers 1/0 -> bool."""
    if isinstance(value, bool):
        return value
    if is_number(value) and value in (0, 1):
        return value == 1
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError(f"invalid literal {value!r}")
    raise ValueError(f"cannot convert {_describe(value)}")


def to_datetime(value: Any) -> str:
    """ISO 8601 text or epoch seconds (number or numeric string) -> ISO 8601 text in UTC."""
    try:
        if is_number(value):
            moment = datetime.fromtimestamp(value, tz=timezone.utc)
        elif isinstance(value, str):
            number = parse_number(value)
            if number is not None:
                moment = datetime.fromtimestamp(number, tz=timezone.utc)
            else:
                text = value.strip()
                if text[-1:] in ("Z", "z"):
                    text = text[:-1] + "+00:00"
                moment = datetime.fromisoformat(text)
                if moment.tzinfo is None:
                    moment = moment.replace(tzinfo=timezone.utc)
        else:
            raise ValueError(f"cannot convert {_describe(value)}")
    except (OverflowError, OSError, ValueError) as exc:
        if isinstance(value, str):
            raise ValueError(f"not an ISO 8601 date-time or epoch seconds: {value!r}") from exc
        raise ValueError(str(exc)) from exc
    return moment.astimezone(timezone.utc).isoformat()


CASTS: dict[str, Caster] = {
    "int": to_int,
    "float": to_float,
    "str": to_str,
    "bool": to_bool,
    "datetime": to_datetime,
}
