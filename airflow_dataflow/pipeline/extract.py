"""Extract: stream the source's records into staged chunks."""

from __future__ import annotations

import logging
from typing import Any

from airflow_dataflow.config import LoadedRoute
from airflow_dataflow.connectors.base import BadRecord, SourceWarning
from airflow_dataflow.context import RunContext
from airflow_dataflow.pipeline.cursor import CURSOR_KEY, cursor_manifest, start_cursor
from airflow_dataflow.pipeline.kinds import make_connector
from airflow_dataflow.staging import StagingArea

log = logging.getLogger(__name__)


def extract(route: LoadedRoute, context: RunContext, staging: StagingArea) -> dict[str, Any]:
    """Read every record of the source; malformed input is staged apart as dead letters.

    Returns ``{"records": manifest, "malformed": manifest, "read": n, "cursor": ...,
    "warnings": [...]}`` where ``read`` counts good and malformed records alike, ``cursor`` is
    ``None`` or the incremental source's cursor (``pipeline/cursor.py``) and ``warnings`` what
    the connector surfaced for the run summary.
    """
    started = start_cursor(route, context)
    cursor, previous = started if started is not None else (None, None)
    connector = make_connector(route, context, cursor)
    warnings: list[str] = []
    with staging.writer("extract") as records, staging.writer("malformed") as malformed:
        for item in connector.read():
            if isinstance(item, SourceWarning):
                warnings.append(item.message)
                log.warning("%s", item.message)
            elif isinstance(item, BadRecord):
                malformed.write(
                    {
                        "route": route.route_id,
                        "run_id": context.run_id,
                        "rule": None,
                        "step": None,
                        "step_kind": None,
                        "error": item.error,
                        "position": item.position,
                        "record": item.raw,
                    }
                )
                log.warning("malformed input at %s: %s", item.position, item.error)
            else:
                records.write(item)
        records_manifest = records.close()
        malformed_manifest = malformed.close()
    read = records_manifest["count"] + malformed_manifest["count"]
    log.info("extracted %d records (%d malformed)", read, malformed_manifest["count"])
    return {
        "records": records_manifest,
        "malformed": malformed_manifest,
        "read": read,
        CURSOR_KEY: None if cursor is None else cursor_manifest(cursor, previous),
        "warnings": warnings,
    }
