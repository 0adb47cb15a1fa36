"""The SQL side of the ``bigquery`` connector: parameters, legacy SQL, the cursor wrap, job ids.

Plain Python over the query text and the library's parameter classes, no API calls, so it is
tested without a server.

Parameter types are inferred from each value (after its templates are rendered):

=====================================  ==========================================================
value                                  BigQuery parameter
=====================================  ==========================================================
``true`` / ``false``                   ``BOOL``
integer                                ``INT64`` (beyond 64 bits: refused)
float                                  ``FLOAT64`` (NaN and infinities refused)
``Decimal``                            ``NUMERIC``
string                                 ``STRING``, also for ISO dates and timestamps: BigQuery
                                       coerces a ``STRING`` parameter to ``DATE``, ``DATETIME``,
                                       ``TIME`` or ``TIMESTAMP`` where the query expects one, and
                                       a string compared with a ``STRING`` column stays a string
unquoted YAML date / datetime          ``DATE``; ``TIMESTAMP`` with a time zone, else ``DATETIME``
``null``                               ``STRING`` NULL (write ``CAST(@x AS INT64)`` for another type)
list                                   ``ARRAY<T>`` of its elements' type (integers and floats
                                       mixed: ``FLOAT64``; empty: ``ARRAY<STRING>``); no NULL
                                       elements, no nested lists
map                                    refused (``STRUCT`` parameters are not supported)
=====================================  ==========================================================
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from google.cloud.bigquery.query import ArrayQueryParameter, ScalarQueryParameter

    QueryParameter = ScalarQueryParameter | ArrayQueryParameter

SNAPSHOT_PARAMETER = "dataflow_snapshot"
CURSOR_PARAMETER = "dataflow_cursor"
RESERVED_PARAMETERS = frozenset({SNAPSHOT_PARAMETER, CURSOR_PARAMETER})
CURSOR_ALIAS = "dataflow_rows"
JOB_ID_PREFIX = "dataflow"
_INT64 = (-(2**63), 2**63 - 1)

# What may hide an ``@name`` that is not a parameter: comments, string and bytes literals
# (triple-quoted, raw), quoted identifiers; then ``@@system_variables``, then parameters.
_TOKENS = re.compile(
    r"""
    (?P<skip>
        --[^\n]* | \#[^\n]* | /\*.*?\*/
      | [rRbB]{0,2}(?:'''.*?''' | \"\"\".*?\"\"\" | '(?:\\.|[^'\\\n])*' | "(?:\\.|[^"\\\n])*")
      | `[^`]*`
    )
    | (?P<system>@@[A-Za-z_][A-Za-z0-9_]*)
    | @(?P<param>[A-Za-z_][A-Za-z0-9_]*)
    """,
    re.DOTALL | re.VERBOSE,
)
_LEGACY_PREFIX = re.compile(r"^\s*#\s*legacySQL\b", re.IGNORECASE)
_LEGACY_TABLE = re.compile(r"\b(?:FROM|JOIN)\s+\[[^\]]*\]", re.IGNORECASE)


class ParameterError(ValueError):
    """A parameter value BigQuery cannot take as a typed query parameter."""


def query_parameter_names(query: str) -> set[str]:
    """The ``@name`` query parameters of ``query`` (not in strings, comments or `quoted` names)."""
    return {match["param"] for match in _TOKENS.finditer(query) if match["param"]}


def legacy_sql_problem(query: str) -> str | None:
    """Why ``query`` is legacy SQL (``#legacySQL`` prefix, ``[project:dataset.table]``), or None."""
    if _LEGACY_PREFIX.match(query):
        return (
            "starts with #legacySQL; only GoogleSQL (standard SQL) is supported: remove the "
            "prefix and write the query in standard SQL"
        )
    code = _TOKENS.sub(lambda m: " " if m["skip"] else m[0], query)
    found = _LEGACY_TABLE.search(code)
    if found:
        return (
            f"uses a legacy SQL table reference ({found[0].split(None, 1)[1]}); only GoogleSQL "
            "(standard SQL) is supported: write `project.dataset.table` in backquotes"
        )
    return None


def cursor_query(query: str, column: str, with_start: bool) -> str:
    """``query`` wrapped to keep rows whose ``column`` is > ``@dataflow_cursor``, in its order.

    Without a start value every row is kept, still in order. A trailing ``;`` is dropped and the
    query kept on its own lines (a trailing ``--`` comment stays harmless).
    """
    inner = query.strip().rstrip(";").rstrip()
    quoted = f"`{column}`"
    where = f" WHERE {quoted} > @{CURSOR_PARAMETER}" if with_start else ""
    return f"SELECT * FROM (\n{inner}\n) AS {CURSOR_ALIAS}{where} ORDER BY {quoted}"


def query_parameter(name: str, value: Any) -> QueryParameter:
    """``value`` as a typed BigQuery query parameter (see the module docstring)."""
    from google.cloud.bigquery import ArrayQueryParameter, ScalarQueryParameter

    if isinstance(value, list | tuple):
        element_type = _array_type(value)
        return ArrayQueryParameter(name, element_type, list(value))
    if value is None:
        return ScalarQueryParameter(name, "STRING", None)
    return ScalarQueryParameter(name, _scalar_type(value), value)


def check_parameter_value(value: Any) -> None:
    """Raise ``ParameterError`` when ``value`` cannot be a query parameter (for validation)."""
    if isinstance(value, list | tuple):
        _array_type(value)
    elif value is not None:
        _scalar_type(value)


def _scalar_type(value: Any) -> str:
    if isinstance(value, bool):
        return "BOOL"
    if isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            raise ParameterError(f"{value} does not fit INT64 (64-bit integers)")
        return "INT64"
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ParameterError(f"{value} is not a finite number")
        return "FLOAT64"
    if isinstance(value, Decimal):
        return "NUMERIC"
    if isinstance(value, str):
        return "STRING"
    if isinstance(value, bytes):
        return "BYTES"
    if isinstance(value, dt.datetime):
        return "DATETIME" if value.tzinfo is None else "TIMESTAMP"
    if isinstance(value, dt.date):
        return "DATE"
    if isinstance(value, dt.time):
        return "TIME"
    if isinstance(value, Mapping):
        raise ParameterError("a map (STRUCT parameters are not supported); pass its fields apart")
    raise ParameterError(f"{value!r} ({type(value).__name__}) has no BigQuery parameter type")


def _array_type(values: Sequence[Any]) -> str:
    types = set()
    for item in values:
        if item is None:
            raise ParameterError("a list with a null element (BigQuery arrays cannot hold NULL)")
        if isinstance(item, list | tuple):
            raise ParameterError("a list of lists (BigQuery has no arrays of arrays)")
        types.add(_scalar_type(item))
    if types == {"INT64", "FLOAT64"}:
        return "FLOAT64"
    if len(types) > 1:
        raise ParameterError(f"a list mixing {', '.join(sorted(types))} (one type per array)")
    return types.pop() if types else "STRING"


def snapshot_parameter(at: dt.datetime) -> QueryParameter:
    """The ``@dataflow_snapshot`` TIMESTAMP parameter (``at`` in UTC; naive means UTC)."""
    from google.cloud.bigquery import ScalarQueryParameter

    if at.tzinfo is None:
        at = at.replace(tzinfo=dt.UTC)
    return ScalarQueryParameter(SNAPSHOT_PARAMETER, "TIMESTAMP", at.astimezone(dt.UTC))


def job_id(
    *,
    route: str,
    run_id: str,
    project: str,
    location: str | None,
    query: str,
    parameters: Sequence[QueryParameter],
) -> str:
    """The run's job id: the same for every try of the same extract, so a retry re-attaches.

    Derived from the route, run id, project, location, the final query text and its parameters
    (the cursor start and the snapshot time among them), never from the try number.
    """
    identity = {
        "route": route,
        "run_id": run_id,
        "project": project,
        "location": location,
        "query": query,
        "parameters": sorted(
            (parameter.to_api_repr() for parameter in parameters),
            key=lambda item: str(item.get("name")),
        ),
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()
    route_part = re.sub(r"[^A-Za-z0-9_-]", "_", route)[:200]
    return f"{JOB_ID_PREFIX}_{route_part}_{digest[:40]}"


def chained_job_id(base: str, number: int) -> str:
    """The ``number``-th job id of a run (1: ``base``): the next one after a job that failed."""
    return base if number == 1 else f"{base}_{number}"
