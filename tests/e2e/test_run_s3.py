"""The s3 destination's docs example, run by ``airflow-dataflow run`` against moto's S3 server."""

from __future__ import annotations

import gzip
import io
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.cli import CliResult, assert_conserved
from tests.support.moto_server import S3Store, connection_json, moto_endpoint
from tests.support.routes import write_jsonl, write_route

ROOT = Path(__file__).resolve().parents[2]
_YAML = re.compile(r"^```yaml\n(.*?)^```", re.MULTILINE | re.DOTALL)
COUNTRIES = ["DE", "FR", "IT", "US"]


@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    yield from moto_endpoint()


def _docs_example() -> str:
    text = (ROOT / "docs" / "destinations" / "s3.md").read_text(encoding="utf-8")
    (example,) = [
        b for b in _YAML.findall(text) if b.startswith("# dags/orders_to_lake.route.yaml")
    ]
    return example


def test_the_docs_example_uploads_every_record_once(
    dataflow: Callable[..., CliResult], tmp_path: Path, moto: str
) -> None:
    import pyarrow.parquet as pq

    store = S3Store(moto)
    bucket = store.new_bucket("lake")
    example = _docs_example()
    assert "bucket: dataflow-lake" in example
    route = write_route(tmp_path, "orders_to_lake", example.replace("dataflow-lake", bucket))
    orders = [
        {"id": n, "amount": (n * 37) % 250, "country": COUNTRIES[n % 4], "note": "{{ 7*7 }}"}
        for n in range(2500)
    ]
    write_jsonl(tmp_path / "data" / "orders.jsonl", orders)
    dataflow.connect("lake", connection_json(moto))  # type: ignore[attr-defined]

    for attempt in range(2):  # a second run rewrites the same objects: still no duplicate
        result = dataflow("run", str(route), "--json")
        summary = result.summary
        assert summary["state"] == "success", result.output[-5000:]
        assert_conserved(summary)
        big = [order for order in orders if order["amount"] > 100]
        assert summary["counts"]["destinations"] == {"lake": 2500, "big_orders": len(big)}

        keys = store.keys(bucket)
        lake_keys = [key for key in keys if key.startswith("orders/")]
        assert len(lake_keys) == 4, keys
        lake_rows = []
        for key in lake_keys:
            table = pq.read_table(io.BytesIO(store.read(bucket, key)))
            country = re.search(r"country=(\w+)/", key).group(1)  # type: ignore[union-attr]
            assert set(table.column("country").to_pylist()) == {country}
            lake_rows.extend(table.to_pylist())
        assert sorted(row["id"] for row in lake_rows) == list(range(2500))
        assert {row["note"] for row in lake_rows} == {"{{ 7*7 }}"}  # data, never template

        big_keys = sorted(key for key in keys if key.startswith("big/"))
        assert len(big_keys) == (len(big) + 999) // 1000, (attempt, big_keys)
        assert all(re.fullmatch(r"big/dt=[\d-]+/part-\d+\.jsonl\.gz", key) for key in big_keys)
        big_rows = [
            json.loads(line)
            for key in big_keys
            for line in gzip.decompress(store.read(bucket, key)).splitlines()
        ]
        assert sorted(row["id"] for row in big_rows) == [order["id"] for order in big]
        assert set(big_rows[0]) == {"id", "amount", "country"}


def test_a_missing_bucket_fails_the_run_with_a_clear_message(
    dataflow: Callable[..., CliResult], tmp_path: Path, moto: str
) -> None:
    route = write_route(
        tmp_path,
        "to_nowhere",
        """
        retries: 0
        source: {type: file, path: data/orders.jsonl}
        rules: [{name: all, to: [lake]}]
        destinations:
          lake: {type: s3, connection: lake, bucket: no-such-bucket-e2e, key: o.jsonl}
        """,
    )
    write_jsonl(tmp_path / "data" / "orders.jsonl", [{"id": 1}])
    dataflow.connect("lake", connection_json(moto))  # type: ignore[attr-defined]
    result = dataflow("run", str(route), "--json")
    assert result.returncode == 1
    assert result.summary["state"] == "failed"
    assert "no-such-bucket-e2e" in result.output and "NoSuchBucket" in result.output
