"""The ``file`` destination: exact contents per format, templates, atomicity, object storage."""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest

from airflow_dataflow.context import RunContext
from airflow_dataflow.destinations.file import FileDestination, FileDestinationSettings
from airflow_dataflow.errors import DestinationError

RECORDS = [
    {"id": 1, "name": "Ann", "amount": 10.5},
    {"id": 2, "name": "Bob", "tags": ["a", "b"]},
    {"id": 3, "name": "été", "address": {"city": "Köln"}, "amount": None},
]


def destination(
    path: str | Path,
    *,
    name: str = "out",
    context: RunContext | None = None,
    **settings: Any,
) -> FileDestination:
    model = FileDestinationSettings(type="file", path=str(path), **settings)
    return FileDestination(name, model, context or RunContext(route="orders"))


def deliver(path: str | Path, batches: Any, **settings: Any) -> Any:
    return destination(path, **settings).deliver(batches)


# --- Formats ----------------------------------------------------------------------------------


def test_jsonl_exact_content(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    result = deliver(out, [RECORDS[:2], RECORDS[2:]])
    assert result.delivered == 3
    assert result.locations == [str(out)]
    assert out.read_text(encoding="utf-8") == (
        '{"id": 1, "name": "Ann", "amount": 10.5}\n'
        '{"id": 2, "name": "Bob", "tags": ["a", "b"]}\n'
        '{"id": 3, "name": "été", "address": {"city": "Köln"}, "amount": null}\n'
    )


def test_json_exact_content(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    result = deliver(out, [RECORDS[:1], [], RECORDS[1:2]])
    assert result.delivered == 2
    assert out.read_text(encoding="utf-8") == (
        '[\n{"id": 1, "name": "Ann", "amount": 10.5},\n{"id": 2, "name": "Bob", "tags": ["a", "b"]}\n]\n'
    )
    assert json.loads(out.read_text(encoding="utf-8")) == RECORDS[:2]


def test_json_with_no_records_is_an_empty_array(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    assert deliver(out, []).delivered == 0
    assert json.loads(out.read_text(encoding="utf-8")) == []


def test_csv_header_is_the_union_of_keys_in_first_seen_order(tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    result = deliver(out, [RECORDS[:2], RECORDS[2:]])
    assert result.delivered == 3
    assert out.read_bytes().decode("utf-8") == (
        "id,name,amount,tags,address\r\n"
        "1,Ann,10.5,,\r\n"
        '2,Bob,,"[""a"", ""b""]",\r\n'
        '3,été,,,"{""city"": ""Köln""}"\r\n'
    )
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert json.loads(rows[1]["tags"]) == ["a", "b"]
    assert json.loads(rows[2]["address"]) == {"city": "Köln"}
    assert rows[2]["amount"] == ""  # None is empty


def test_csv_booleans_and_zero(tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    deliver(out, [[{"ok": True, "n": 0, "no": False}]])
    assert out.read_text(encoding="utf-8") == "ok,n,no\ntrue,0,false\n"


def test_parquet_round_trip(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    out = tmp_path / "out.parquet"
    rows = [{"id": 1, "name": "a", "amount": 1.5}, {"id": 2, "name": None, "amount": 2.0}]
    result = deliver(out, [rows[:1], [], rows[1:]])
    assert result.delivered == 2
    assert pq.read_table(out).to_pylist() == rows


def test_parquet_records_of_clashing_types_raise_destination_error(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    with pytest.raises(DestinationError, match="Parquet"):
        deliver(out, [[{"id": 1}], [{"id": "not a number"}]])
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_parquet_keeps_a_field_that_first_appears_in_a_later_batch(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    out = tmp_path / "out.parquet"
    batches = [[{"id": 1}, {"id": 2}], [], [{"id": 3, "note": "late", "nested": {"a": 1}}]]
    result = deliver(out, batches)
    assert result.delivered == 3
    assert pq.read_table(out).to_pylist() == [
        {"id": 1, "note": None, "nested": None},
        {"id": 2, "note": None, "nested": None},
        {"id": 3, "note": "late", "nested": {"a": 1}},
    ]


def test_parquet_keeps_a_field_missing_from_the_first_record_of_a_batch(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    out = tmp_path / "out.parquet"
    deliver(out, [[{"id": 1}, {"id": 2, "extra": True}]])
    assert pq.read_table(out).to_pylist() == [
        {"id": 1, "extra": None},
        {"id": 2, "extra": True},
    ]


def test_parquet_types_are_unified_across_batches(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = tmp_path / "out.parquet"
    batches = [
        [{"n": 1, "maybe": None, "tags": [], "obj": {"a": 1}}],
        [{"n": 2.5, "maybe": "x", "tags": ["t"], "obj": {"b": "y"}}],
    ]
    assert deliver(out, batches).delivered == 2
    table = pq.read_table(out)
    assert table.schema.field("n").type == pa.float64()
    assert table.schema.field("maybe").type == pa.string()
    assert table.to_pylist() == [
        {"n": 1.0, "maybe": None, "tags": [], "obj": {"a": 1, "b": None}},
        {"n": 2.5, "maybe": "x", "tags": ["t"], "obj": {"a": None, "b": "y"}},
    ]


def test_parquet_field_of_clashing_types_names_destination_and_field(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    with pytest.raises(DestinationError) as caught:
        deliver(out, [[{"id": 1, "amount": 5}], [{"id": 2, "amount": "five"}]], name="dwh")
    message = str(caught.value)
    assert "'orders'" in message and "'dwh'" in message
    assert "'amount'" in message and "int64" in message and "string" in message
    assert list(tmp_path.iterdir()) == []


def test_parquet_field_of_mixed_values_in_one_batch_names_the_field(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    with pytest.raises(DestinationError) as caught:
        deliver(out, [[{"id": 1, "big": 1}, {"id": 2, "big": 2**70}]], name="dwh")
    message = str(caught.value)
    assert "'dwh'" in message and "'big'" in message
    assert list(tmp_path.iterdir()) == []


def test_parquet_value_that_does_not_fit_the_unified_type_names_the_field(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out.parquet"
    with pytest.raises(DestinationError) as caught:
        deliver(out, [[{"n": 2**60 + 1}], [{"n": 1.5}]], name="dwh")  # int64 + double: double
    message = str(caught.value)
    assert "'dwh'" in message and "'n'" in message and "double" in message
    assert list(tmp_path.iterdir()) == []


def test_parquet_with_no_records_is_a_readable_empty_file(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    out = tmp_path / "out.parquet"
    assert deliver(out, [[]]).delivered == 0
    assert pq.read_table(out).num_rows == 0


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("out.jsonl", "jsonl"),
        ("out.json", "json"),
        ("out.csv", "csv"),
        ("out.parquet", "parquet"),
        ("out.csv.gz", "csv"),
        ("out.txt", "jsonl"),
    ],
)
def test_format_from_extension(tmp_path: Path, name: str, expected: str) -> None:
    import pyarrow.parquet as pq

    out = tmp_path / name
    compression = "gzip" if name.endswith(".gz") else "none"
    deliver(out, [[{"a": 1}, {"a": 2}]], compression=compression)
    data = out.read_bytes()
    if compression == "gzip":
        data = gzip.decompress(data)
    if expected == "jsonl":
        assert data == b'{"a": 1}\n{"a": 2}\n'
    elif expected == "json":
        assert json.loads(data) == [{"a": 1}, {"a": 2}]
    elif expected == "csv":
        assert data == b"a\r\n1\r\n2\r\n"
    else:
        assert pq.read_table(out).to_pylist() == [{"a": 1}, {"a": 2}]


def test_explicit_format_overrides_extension(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    deliver(out, [[{"a": 1}]], format="csv")
    assert out.read_text(encoding="utf-8") == "a\n1\n"


@pytest.mark.parametrize("file_format", ["jsonl", "json", "csv"])
def test_gzip_compression_is_readable_with_gzip(tmp_path: Path, file_format: str) -> None:
    out = tmp_path / f"out.{file_format}.gz"
    deliver(out, [RECORDS], compression="gzip")
    text = gzip.decompress(out.read_bytes()).decode("utf-8")
    if file_format == "jsonl":
        assert [json.loads(line) for line in text.splitlines()] == RECORDS
    elif file_format == "json":
        assert json.loads(text) == RECORDS
    else:
        rows = list(csv.DictReader(io.StringIO(text)))
        assert [row["id"] for row in rows] == ["1", "2", "3"]
        assert rows[2]["name"] == "été"


def test_gzip_parquet(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    out = tmp_path / "out.parquet.gz"
    deliver(out, [[{"a": 1}]], compression="gzip")
    assert pq.read_table(io.BytesIO(gzip.decompress(out.read_bytes()))).to_pylist() == [{"a": 1}]


# --- Paths ------------------------------------------------------------------------------------


def test_path_template_sees_ds_run_id_params_route_and_destination(tmp_path: Path) -> None:
    context = RunContext(
        route="orders",
        run_id="manual__2024-01-02T03:04:05+00:00",
        ds="2024-01-02",
        params={"region": "eu"},
    )
    template = (
        str(tmp_path)
        + "/{{ route }}/{{ destination }}/{{ ds }}/{{ params.region }}-{{ run_id }}.jsonl"
    )
    result = destination(template, name="big_orders", context=context).deliver([[{"a": 1}]])
    expected = (
        tmp_path
        / "orders"
        / "big_orders"
        / "2024-01-02"
        / ("eu-manual__2024-01-02T03:04:05+00:00.jsonl")
    )
    assert result.locations == [str(expected)]
    assert expected.read_text(encoding="utf-8") == '{"a": 1}\n'


def test_undefined_template_variable_fails_before_writing(tmp_path: Path) -> None:
    from jinja2 import UndefinedError

    with pytest.raises(UndefinedError):
        deliver(str(tmp_path) + "/{{ nope }}.jsonl", [[{"a": 1}]])
    assert list(tmp_path.iterdir()) == []


def test_relative_path_resolves_against_the_route_file_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    routes = tmp_path / "dags"
    routes.mkdir()
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    context = RunContext(route="orders", ds="2024-01-01", route_file=str(routes / "o.route.yaml"))
    result = destination("../out/{{ ds }}.jsonl", context=context).deliver([[{"a": 1}]])
    written = tmp_path / "out" / "2024-01-01.jsonl"
    assert written.read_text(encoding="utf-8") == '{"a": 1}\n'
    assert Path(result.locations[0]).resolve() == written
    assert list(elsewhere.iterdir()) == []


def test_missing_parent_folders_are_created(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b" / "c" / "out.jsonl"
    deliver(out, [[{"a": 1}]])
    assert out.exists()


def test_unwritable_location_is_a_destination_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x", encoding="utf-8")
    with pytest.raises(DestinationError) as caught:
        deliver(blocker / "out.jsonl", [[{"a": 1}]], name="big")
    assert "'orders'" in str(caught.value) and "'big'" in str(caught.value)


# --- Atomicity and retries --------------------------------------------------------------------


def test_no_temporary_file_is_left_behind(tmp_path: Path) -> None:
    deliver(tmp_path / "out.jsonl", [[{"a": 1}]])
    assert [path.name for path in tmp_path.iterdir()] == ["out.jsonl"]


@pytest.mark.parametrize("file_format", ["jsonl", "json", "csv", "parquet"])
def test_failure_mid_write_leaves_the_previous_file_intact(
    tmp_path: Path, file_format: str
) -> None:
    out = tmp_path / f"out.{file_format}"
    deliver(out, [[{"a": 1}]])
    before = out.read_bytes()

    class Boom(Exception):
        pass

    class FailingBatches:
        """Re-iterable (CSV reads twice); fails after the first batch of each pass."""

        def __iter__(self) -> Iterator[list[dict[str, Any]]]:
            yield [{"a": 2}, {"a": 3}]
            raise Boom("connection to staging lost")

    with pytest.raises(Boom):
        deliver(out, FailingBatches())
    assert out.read_bytes() == before
    assert [path.name for path in tmp_path.iterdir()] == [out.name]


def test_retried_delivery_rewrites_instead_of_appending(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    target = destination(out)
    target.deliver([RECORDS])
    first = out.read_bytes()
    result = target.deliver([RECORDS])
    assert result.delivered == 3
    assert out.read_bytes() == first
    assert len(out.read_text(encoding="utf-8").splitlines()) == 3


def test_csv_retry_rewrites(tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    deliver(out, [[{"a": 1}]])
    deliver(out, [[{"b": 2}]])
    assert out.read_text(encoding="utf-8") == "b\n2\n"


# --- Object storage ---------------------------------------------------------------------------


@pytest.mark.parametrize("file_format", ["jsonl", "csv", "parquet"])
def test_writes_into_a_memory_url(memory_root: str, file_format: str) -> None:
    import pyarrow.parquet as pq

    fs = fsspec.filesystem("memory")
    context = RunContext(route="orders", ds="2024-05-06")
    url = f"memory://{memory_root}/out/{{{{ ds }}}}.{file_format}"
    rows = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    result = destination(url, context=context).deliver([rows])
    key = f"/{memory_root}/out/2024-05-06.{file_format}"
    assert result.delivered == 2
    assert result.locations == [f"memory://{memory_root}/out/2024-05-06.{file_format}"]
    data = fs.cat(key)
    if file_format == "jsonl":
        assert data == b'{"id": 1, "name": "a"}\n{"id": 2, "name": "b"}\n'
    elif file_format == "csv":
        assert data == b"id,name\r\n1,a\r\n2,b\r\n"
    else:
        assert pq.read_table(io.BytesIO(data)).to_pylist() == rows


def test_memory_url_gzip_and_rewrite(memory_root: str) -> None:
    fs = fsspec.filesystem("memory")
    url = f"memory://{memory_root}/out.jsonl.gz"
    deliver(url, [[{"a": 1}, {"a": 2}]], compression="gzip")
    deliver(url, [[{"a": 1}, {"a": 2}]], compression="gzip")
    assert gzip.decompress(fs.cat(f"/{memory_root}/out.jsonl.gz")) == b'{"a": 1}\n{"a": 2}\n'


def test_memory_url_is_not_resolved_against_the_route_folder(
    memory_root: str, tmp_path: Path
) -> None:
    context = RunContext(route="orders", route_file=str(tmp_path / "r.route.yaml"))
    destination(f"memory://{memory_root}/x.jsonl", context=context).deliver([[{"a": 1}]])
    assert fsspec.filesystem("memory").cat(f"/{memory_root}/x.jsonl") == b'{"a": 1}\n'
    assert list(tmp_path.iterdir()) == []
