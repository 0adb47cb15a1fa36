"""Helpers to write route files and their data in a temporary folder."""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from airflow_dataflow.config import LoadedRoute, load_route
from airflow_dataflow.context import RunContext


def write_route(folder: Path, name: str, text: str) -> Path:
    """Write ``<name>.route.yaml`` (dedented) under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.route.yaml"
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def write_jsonl(path: Path, records: Iterable[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[Any]:
    return [
        json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    ]


def route_text(destination: str) -> str:
    """A route reading ``in.jsonl`` into one destination ``out`` (its YAML, flow or block)."""
    destination = textwrap.dedent(destination).strip()
    if "\n" in destination:  # a block mapping: indented under ``out:``
        out = "out:\n" + textwrap.indent(destination, " " * 4)
    else:
        out = f"out: {destination}"
    return f"""
source: {{type: file, path: in.jsonl}}
rules: [{{name: all, to: [out]}}]
destinations:
  {out}
"""


def order(n: int) -> dict[str, Any]:
    """The ``n``-th order of the default test input."""
    return {"id": n, "amount": n % 70, "note": f"order {n}"}


def stage_partition(
    tmp_path: Path,
    destination: str,
    run_id: str,
    records: int | Iterable[Any] = 1000,
    *,
    ds: str | None = None,
    chunk_size: int | None = 300,
) -> tuple[LoadedRoute, RunContext, dict[str, Any]]:
    """Route ``orders`` reading ``records`` into ``destination``; extract and route one run.

    ``records`` is a count of :func:`order` records or the records themselves; ``destination``
    the YAML of destination ``out``. Returns the route, its run context (of ``ds`` if given)
    and the staged partition of ``out``, ready for ``deliver(route, "out", context, partition)``.
    """
    from airflow_dataflow.pipeline.extract import extract
    from airflow_dataflow.pipeline.route import route_records
    from airflow_dataflow.staging import StagingArea

    write_jsonl(
        tmp_path / "in.jsonl",
        (order(n) for n in range(records)) if isinstance(records, int) else records,
    )
    route = load_route(write_route(tmp_path, "orders", route_text(destination)))
    dated = {} if ds is None else {"ds": ds}
    context = RunContext(route="orders", run_id=run_id, route_file=route.file, **dated)
    sizing = {} if chunk_size is None else {"chunk_size": chunk_size}
    staging = StagingArea(f"file://{tmp_path / 'staging'}", "orders", run_id, **sizing)
    routing = route_records(route, context, staging, extract(route, context, staging))
    return route, context, routing["partitions"]["out"]


DOCS = Path(__file__).resolve().parents[2] / "docs" / "destinations"


def doc_route_example(page: str, folder: str = "destinations") -> str:
    """The complete route example of ``docs/<folder>/<page>``: its yaml block with a
    ``source:`` that is not marked ``# invalid``; of several, the one that starts with a
    ``# dags/...`` file name comment."""
    text = (DOCS.parent / folder / page).read_text(encoding="utf-8")
    blocks = re.findall(r"^```yaml\n(.*?)^```", text, re.M | re.S)
    routes = [b for b in blocks if re.search(r"^source:", b, re.M) and "# invalid" not in b]
    if len(routes) > 1:
        routes = [block for block in routes if block.startswith("# dags/")]
    (example,) = routes
    return str(example)


def stage_and_deliver(
    tmp_path: Path, destination: dict[str, Any], records: Iterable[Any], run_id: str = "run-1"
) -> dict[str, Any]:
    """Route ``records`` to ``destination`` (its settings) and deliver them through the ledger."""
    from airflow_dataflow.pipeline.deliver import deliver

    route, context, partition = stage_partition(
        tmp_path, json.dumps(destination), run_id, records, chunk_size=None
    )
    return deliver(route, "out", context, partition)
