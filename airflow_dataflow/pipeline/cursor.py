"""The source cursor of one run: where extract starts, and what commit saves afterwards.

Extract starts at the run's ``since`` param when given, else at ``source.cursor.initial`` when
``reset_cursor`` is true, else at the committed cursor, else at ``initial``. It records
``{"stream", "column", "previous", "start", "value"}`` in its manifest (``value``: the candidate,
the greatest value read; ``None`` when nothing was read). Commit saves ``value`` once every
delivery succeeded or was dead-lettered, when records were read and it differs from ``previous``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from airflow_dataflow.config import LoadedRoute
from airflow_dataflow.connectors.base import (
    RESET_CURSOR_PARAM,
    SINCE_PARAM,
    Cursor,
    CursorSpec,
    JsonScalar,
    is_cursor_value,
    json_type,
)
from airflow_dataflow.context import RunContext
from airflow_dataflow.state.cursors import SOURCE_STREAM, CursorError, CursorStore

log = logging.getLogger(__name__)

CURSOR_KEY = "cursor"  # the extract manifest's key


def start_cursor(route: LoadedRoute, context: RunContext) -> tuple[Cursor, JsonScalar] | None:
    """The run's cursor and the committed value it replaces (``None``: not an incremental source)."""
    spec = route.config.source.cursor_spec()
    if spec is None:
        return None
    store = CursorStore.open()
    since = context.params.get(SINCE_PARAM)
    if since is not None or context.params.get(RESET_CURSOR_PARAM) is True:
        previous = _previous_value(store, route.route_id, spec)
        start = spec.initial if since is None else since_value(route.route_id, spec, since)
        log.warning(
            "route %s: reading after %r (committed cursor: %r)", route.route_id, start, previous
        )
    else:
        committed = store.get(route.route_id, spec)
        previous = None if committed is None else committed.value
        start = spec.initial if committed is None else committed.value
    return Cursor(spec.field, start=start), previous


def _previous_value(store: CursorStore, route_id: str, spec: CursorSpec) -> JsonScalar:
    """The committed value, when a run re-reads from another point: a corrupted one is replaced."""
    try:
        committed = store.get(route_id, spec)
    except CursorError as exc:
        log.warning("%s", exc)
        return None
    return None if committed is None else committed.value


def since_value(route_id: str, spec: CursorSpec, value: Any, given_as: str = "") -> JsonScalar:
    """``value`` (the ``since`` param, or ``given_as``) as a cursor value of ``initial``'s type.

    A trigger form gives text: a numeric string is a number when ``initial`` is one.
    """
    if isinstance(value, str) and json_type(spec.initial) == "number":
        value = _number(value)
    if not is_cursor_value(value) or (
        spec.initial is not None and json_type(value) != json_type(spec.initial)
    ):
        expected = (
            "a string or a number"
            if spec.initial is None
            else f"a {json_type(spec.initial)} like source.cursor.initial ({spec.initial!r})"
        )
        what = given_as or f"the run's param {SINCE_PARAM}"
        raise CursorError(f"route {route_id!r}: {what} is {value!r}; it must be {expected}")
    return value


def _number(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def cursor_manifest(cursor: Cursor, previous: JsonScalar) -> dict[str, Any]:
    """What the extract manifest says about the cursor (XCom: plain JSON)."""
    return {
        "stream": SOURCE_STREAM,
        "column": cursor.field,
        "previous": previous,
        "start": cursor.start,
        "value": cursor.last_value,
    }


def commit_cursor(route_id: str, extracted: Mapping[str, Any] | None, run_id: str) -> bool:
    """Save the candidate cursor of the extract manifest ``extracted``; whether it was saved.

    Nothing is saved when the source has no cursor, nothing was read, or the value is the
    committed one already.
    """
    manifest = (extracted or {}).get(CURSOR_KEY)
    if not manifest or manifest["value"] is None:
        return False
    value, previous = manifest["value"], manifest["previous"]
    if value == previous and json_type(value) == json_type(previous):
        return False
    CursorStore.open().save(
        route_id, manifest["column"], value, run_id=run_id, stream=manifest["stream"]
    )
    log.info(
        "route %s: cursor %s moved from %r to %r", route_id, manifest["column"], previous, value
    )
    return True
