"""Render the templated values of rules once, at compile time."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow_dataflow.templating import is_template, render_value


def has_template(value: Any) -> bool:
    """True when a value, or anything nested in it, is a Jinja template."""
    if isinstance(value, str):
        return is_template(value)
    if isinstance(value, (list, tuple)):
        return any(has_template(item) for item in value)
    if isinstance(value, dict):
        return any(has_template(item) for item in value.values())
    return False


def render_once(
    value: Any, variables: Mapping[str, Any] | None, error: type[Exception], where: str
) -> Any:
    """Render templates inside `value` to native values; failures raise `error` naming `where`."""
    if not has_template(value):
        return value
    try:
        return render_value(value, dict(variables or {}))
    except Exception as exc:
        raise error(f"{where}: cannot render template {value!r}: {exc}") from exc
