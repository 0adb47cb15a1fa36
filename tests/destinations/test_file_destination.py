"""The ``file`` destination: exact contents per format, templates, atomicity, object storage."""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import fsspec
import pytest

from airflow_dataflow.context import RunContext
from airflow_dataflow.destinations import file as file_destination
from airflow_dataflow.destinations.file import FileDestination, FileDestinationSettings
from airflow_dataflow.errors import DestinationError
from tests.support.faults import deliver_and_get_killed, fail_on_call
from tests.support.routes import read_jsonl, stage_partition, write_jsonl, write_route

ROOT = Path(__file__).resolve().parents[2]
_YAML = re.compile(r"^```yaml\n(.*?)^```", re.MULTILINE | re.DOTALL)

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


def read_jsonl_gz(path: Path) -> list[Any]:
    return [json.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines()]


# --- Formats ----------------------------------------------------------------------------------


def test_jsonl_exact_content(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    result = deliver(out, [RECORDS[:2], RECORDS[2:]])
    assert result.delivered == 3
    assert result.locations == [str(out)]
    assert out.read_text(encoding="utf-8") == (
        '{"id":1,"name":"Ann","amount":10.5}\n'
        '{"id":2,"name":"Bob","tags":["a","b"]}\n'
        '{"id":3,"name":"été","address":{"city":"Köln"},"amount":null}\n'
    )


def test_json_exact_content(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    result = deliver(out, [RECORDS[:1], [], RECORDS[1:2]])
    assert result.delivered == 2
    assert out.read_text(encoding="utf-8") == (
        '[\n{"id":1,"name":"Ann","amount":10.5},\n{"id":2,"name":"Bob","tags":["a","b"]}\n]\n'
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
        assert data == b'{"a":1}\n{"a":2}\n'
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


@pytest.mark.parametrize(
    ("compression", "codec"),
    [(None, "SNAPPY"), ("none", "UNCOMPRESSED"), ("gzip", "GZIP"), ("zstd", "ZSTD")],
)
def test_parquet_compression_is_the_codec_inside_the_file(
    tmp_path: Path, compression: str | None, codec: str
) -> None:
    """A compressed Parquet file stays a Parquet file every reader opens."""
    import pyarrow.parquet as pq

    out = tmp_path / "out.parquet"
    settings = {"compression": compression} if compression else {}
    deliver(out, [[{"a": 1, "b": "x"}]], **settings)
    parquet = pq.ParquetFile(out)
    assert parquet.metadata.row_group(0).column(0).compression == codec
    assert parquet.read().to_pylist() == [{"a": 1, "b": "x"}]


@pytest.mark.parametrize("file_format", ["jsonl", "json", "csv"])
def test_zstd_compression_is_readable_with_zstandard(tmp_path: Path, file_format: str) -> None:
    import zstandard

    out = tmp_path / f"out.{file_format}"
    deliver(out, [RECORDS[:1], RECORDS[1:]], compression="zstd")
    text = zstandard.ZstdDecompressor().stream_reader(out.read_bytes()).read().decode("utf-8")
    if file_format == "jsonl":
        assert [json.loads(line) for line in text.splitlines()] == RECORDS
    elif file_format == "json":
        assert json.loads(text) == RECORDS
    else:
        assert [row["name"] for row in csv.DictReader(io.StringIO(text))] == ["Ann", "Bob", "été"]


@pytest.mark.parametrize(
    ("name", "magic"), [("out.jsonl.gz", b"\x1f\x8b"), ("out.csv.zst", b"\x28\xb5\x2f\xfd")]
)
def test_compression_defaults_to_the_extension(tmp_path: Path, name: str, magic: bytes) -> None:
    out = tmp_path / name
    deliver(out, [[{"a": 1}]])
    assert out.read_bytes().startswith(magic)


def test_gzip_output_is_the_same_bytes_every_time(tmp_path: Path) -> None:
    """No timestamp in the gzip header: a rewrite gives the same file (and the same ETag)."""
    out = tmp_path / "out.jsonl.gz"
    deliver(out, [RECORDS])
    first = out.read_bytes()
    deliver(out, [RECORDS])
    assert out.read_bytes() == first


# --- Parquet types ------------------------------------------------------------------------------


def _parquet_types(out: Path) -> dict[str, str]:
    import pyarrow.parquet as pq

    schema = pq.ParquetFile(out).schema_arrow
    return {field.name: str(field.type) for field in schema}


def test_parquet_iso_strings_with_a_zone_are_utc_microsecond_timestamps(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    out = tmp_path / "out.parquet"
    batches = [
        [{"at": "2024-01-02T03:04:05+02:00"}, {"at": None}],
        [{"at": "2024-01-02T03:04:05.123456Z"}, {"at": "2024-01-02 03:04Z"}],
    ]
    deliver(out, batches)
    assert _parquet_types(out) == {"at": "timestamp[us, tz=UTC]"}
    column = pq.ParquetFile(out).schema.column(0)
    assert column.physical_type == "INT64"
    logical = str(column.logical_type)
    assert "isAdjustedToUTC=true" in logical and "microseconds" in logical
    values = [row["at"] for row in pq.read_table(out).to_pylist()]
    assert [value and value.isoformat() for value in values] == [
        "2024-01-02T01:04:05+00:00",
        None,
        "2024-01-02T03:04:05.123456+00:00",
        "2024-01-02T03:04:00+00:00",
    ]


def test_parquet_iso_strings_without_a_zone_are_naive_timestamps(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    out = tmp_path / "out.parquet"
    deliver(out, [[{"at": "2024-01-02T03:04:05"}, {"at": "2024-01-02T03:04:05.5"}]])
    assert _parquet_types(out) == {"at": "timestamp[us]"}
    first = pq.read_table(out).to_pylist()[0]["at"]
    assert first == datetime(2024, 1, 2, 3, 4, 5)


@pytest.mark.parametrize(
    "values",
    [
        ["2024-01-02T03:04:05Z", "2024-01-02T03:04:05"],  # zoned and naive
        ["2024-01-02T03:04:05Z", "soon"],  # not every value
        ["2024-01-02", "2024-01-03"],  # dates alone
        ["2024-13-02T03:04:05Z"],  # month 13: looks like one, is not
    ],
)
def test_parquet_strings_that_are_not_all_date_times_stay_strings(
    tmp_path: Path, values: list[str]
) -> None:
    import pyarrow.parquet as pq

    out = tmp_path / "out.parquet"
    deliver(out, [[{"at": value}] for value in values])  # one batch each: unified across them
    assert _parquet_types(out) == {"at": "string"}
    assert [row["at"] for row in pq.read_table(out).to_pylist()] == values


def test_parquet_datetime_values_are_microsecond_timestamps(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    paris = timezone(timedelta(hours=2))
    deliver(
        out,
        [
            [{"aware": datetime(2024, 1, 2, 3, 4, 5, tzinfo=paris), "naive": datetime(2024, 1, 2)}],
            [{"aware": datetime(2024, 1, 2, tzinfo=timezone.utc), "day": date(2024, 1, 2)}],
        ],
    )
    assert _parquet_types(out) == {
        "aware": "timestamp[us, tz=UTC]",
        "naive": "timestamp[us]",
        "day": "date32[day]",
    }


def test_parquet_field_null_in_every_record_is_a_string_column(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    deliver(out, [[{"id": 1, "none": None, "empty": []}], [{"id": 2, "none": None}]])
    assert _parquet_types(out) == {
        "id": "int64",
        "none": "string",
        "empty": "list<element: string>",
    }


def test_parquet_row_groups_span_batches(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    out = tmp_path / "out.parquet"
    deliver(out, [[{"n": n} for n in range(start, start + 100)] for start in range(0, 1000, 100)])
    parquet = pq.ParquetFile(out)
    assert parquet.metadata.num_row_groups == 1
    assert parquet.read().column("n").to_pylist() == list(range(1000))


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
    assert expected.read_text(encoding="utf-8") == '{"a":1}\n'


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
    assert written.read_text(encoding="utf-8") == '{"a":1}\n'
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
        assert data == b'{"id":1,"name":"a"}\n{"id":2,"name":"b"}\n'
    elif file_format == "csv":
        assert data == b"id,name\r\n1,a\r\n2,b\r\n"
    else:
        assert pq.read_table(io.BytesIO(data)).to_pylist() == rows


def test_memory_url_gzip_and_rewrite(memory_root: str) -> None:
    fs = fsspec.filesystem("memory")
    url = f"memory://{memory_root}/out.jsonl.gz"
    deliver(url, [[{"a": 1}, {"a": 2}]], compression="gzip")
    deliver(url, [[{"a": 1}, {"a": 2}]], compression="gzip")
    assert gzip.decompress(fs.cat(f"/{memory_root}/out.jsonl.gz")) == b'{"a":1}\n{"a":2}\n'


def test_memory_url_is_not_resolved_against_the_route_folder(
    memory_root: str, tmp_path: Path
) -> None:
    context = RunContext(route="orders", route_file=str(tmp_path / "r.route.yaml"))
    destination(f"memory://{memory_root}/x.jsonl", context=context).deliver([[{"a": 1}]])
    assert fsspec.filesystem("memory").cat(f"/{memory_root}/x.jsonl") == b'{"a":1}\n'
    assert list(tmp_path.iterdir()) == []


# --- Partitioned paths: one file per rendered path ------------------------------------------------

ORDERS = [
    {"id": 1, "country": "DE", "amount": 5},
    {"id": 2, "country": "FR", "amount": 7},
    {"id": 3, "country": "DE", "amount": 9},
    {"id": 4, "country": "IT", "amount": 1},
    {"id": 5, "country": "FR", "amount": 3},
]


def test_record_fields_in_the_path_give_one_file_per_rendered_path(tmp_path: Path) -> None:
    context = RunContext(route="orders", ds="2024-01-02")
    template = str(tmp_path) + "/out/{{ record.country }}/{{ ds }}.jsonl"
    result = destination(template, context=context).deliver([ORDERS[:2], ORDERS[2:]])
    assert result.delivered == 5 and result.rejections == []
    files = {
        country: tmp_path / "out" / country / "2024-01-02.jsonl" for country in ["DE", "FR", "IT"]
    }
    assert result.locations == [str(files[c]) for c in ("DE", "FR", "IT")]  # first-seen order
    assert read_jsonl(files["DE"]) == [ORDERS[0], ORDERS[2]]  # input order kept
    assert read_jsonl(files["FR"]) == [ORDERS[1], ORDERS[4]]
    assert read_jsonl(files["IT"]) == [ORDERS[3]]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["DE", "FR", "IT"]


def test_partitions_are_spilled_with_few_open_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More partitions than open spill files: each file still gets exactly its records."""
    monkeypatch.setattr(file_destination._Partitions, "MAX_OPEN", 2)
    records = [{"id": n, "part": n % 7} for n in range(700)]
    template = str(tmp_path) + "/{{ record.part }}.parquet"
    result = destination(template).deliver([records[i : i + 50] for i in range(0, 700, 50)])
    assert result.delivered == 700
    import pyarrow.parquet as pq

    for part in range(7):
        rows = pq.read_table(tmp_path / f"{part}.parquet").to_pylist()
        assert rows == [record for record in records if record["part"] == part]


def test_the_path_is_rendered_per_partition_not_per_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = destination(str(tmp_path) + "/{{ record.customer.country | lower }}.jsonl")
    renders: list[Any] = []
    original = file_destination.PathTemplate.render

    def counting(self: Any, batch: int = 0, record: Any = None) -> str:
        renders.append(record)
        return original(self, batch, record)

    monkeypatch.setattr(file_destination.PathTemplate, "render", counting)
    records = [{"id": n, "customer": {"country": "DE" if n % 2 else "FR"}} for n in range(1000)]
    assert target.deliver([records]).delivered == 1000
    assert len(renders) == 2
    assert len(read_jsonl(tmp_path / "de.jsonl")) == 500


def test_values_of_different_types_render_different_paths(tmp_path: Path) -> None:
    """1, 1.0 and True are equal in Python but render "1", "1.0" and "True"."""
    result = destination(str(tmp_path) + "/{{ record.v }}.jsonl").deliver(
        [[{"v": 1}, {"v": 1.0}, {"v": True}, {"v": [1]}]]
    )
    assert sorted(Path(location).name for location in result.locations) == [
        "1.0.jsonl",
        "1.jsonl",
        "True.jsonl",
        "[1].jsonl",
    ]


def test_a_record_the_path_cannot_be_rendered_for_is_refused(tmp_path: Path) -> None:
    result = destination(str(tmp_path) + "/{{ record.country }}.jsonl", name="by_country").deliver(
        [[{"id": 1, "country": "DE"}, {"id": 2}]]
    )
    assert result.delivered == 1
    (refused,) = result.rejections
    assert refused.record == {"id": 2}
    assert "record.country" in refused.reason and "'country'" in refused.reason


def test_record_values_are_data_never_template_source(tmp_path: Path) -> None:
    record = {"id": 1, "name": "{{ 7*7 }}", "dir": "{{ 7*7 }}"}
    destination(str(tmp_path) + "/{{ record.dir }}.jsonl").deliver([[record]])
    written = tmp_path / "{{ 7*7 }}.jsonl"
    assert read_jsonl(written) == [record]
    assert not (tmp_path / "49.jsonl").exists()


def test_target_names_the_pattern_with_placeholders(tmp_path: Path) -> None:
    context = RunContext(route="orders", ds="2024-01-02")
    partitioned = destination("/out/{{ record.country }}/{{ ds }}.jsonl", context=context)
    assert partitioned.target() == "/out/{record.country}/2024-01-02.jsonl"
    batched = destination("/out/{{ ds }}/part-{{ batch }}.csv", context=context)
    assert batched.target() == "/out/2024-01-02/part-{batch}.csv"
    static = destination("/out/{{ ds }}.csv", context=context)
    assert static.target() == "/out/2024-01-02.csv"


def test_target_of_a_template_computing_with_the_batch_keeps_the_run_values() -> None:
    """A target must be the same in every process and differ when the run's values do."""
    template = "/out/{{ ds }}/part-{{ '%05d' % batch }}.jsonl"
    first = destination(template, context=RunContext(route="o", ds="2024-01-01")).target()
    again = destination(template, context=RunContext(route="o", ds="2024-01-01")).target()
    other = destination(template, context=RunContext(route="o", ds="2024-01-02")).target()
    assert first == again != other
    assert "2024-01-01" in first


def test_batch_in_the_path_gives_one_file_per_batch(tmp_path: Path) -> None:
    result = destination(str(tmp_path) + "/part-{{ batch }}.csv").deliver(
        [[{"a": 1}, {"a": 2}], [{"b": 3}]]
    )
    assert result.delivered == 3
    assert (tmp_path / "part-0.csv").read_bytes() == b"a\r\n1\r\n2\r\n"
    assert (tmp_path / "part-1.csv").read_bytes() == b"b\r\n3\r\n"


def test_many_files_are_reported_as_a_capped_list(tmp_path: Path) -> None:
    records = [{"id": n} for n in range(150)]
    result = destination(str(tmp_path) + "/{{ record.id }}.jsonl").deliver([records])
    assert result.delivered == 150 and len(list(tmp_path.iterdir())) == 150
    assert len(result.locations) == 101 and result.locations[-1] == "... and 50 more"


# --- base_dir -----------------------------------------------------------------------------------


def test_a_static_path_outside_base_dir_refuses_the_whole_delivery(tmp_path: Path) -> None:
    base = tmp_path / "exports"
    outside = tmp_path / "elsewhere" / "out.jsonl"
    with pytest.raises(DestinationError) as caught:
        deliver(outside, [[{"a": 1}]], base_dir=str(base), name="big")
    message = str(caught.value)
    assert "'orders'" in message and "'big'" in message
    assert str(outside) in message and str(base) in message and "nothing was written" in message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("country", ["../../escaped", "DE/../../../escaped"])
def test_a_record_whose_path_escapes_base_dir_is_dead_lettered(
    tmp_path: Path, country: str
) -> None:
    base = tmp_path / "exports"
    template = str(base) + "/{{ record.country }}/orders.jsonl"
    records = [{"id": 1, "country": "DE"}, {"id": 2, "country": country}]
    result = destination(template, base_dir=str(base)).deliver([records])
    assert result.delivered == 1
    assert read_jsonl(base / "DE" / "orders.jsonl") == [records[0]]
    (refused,) = result.rejections
    assert refused.record == records[1]
    assert "outside base_dir" in refused.reason and str(base) in refused.reason
    assert sorted(path.name for path in tmp_path.iterdir()) == ["exports"]


def test_a_record_naming_an_absolute_path_elsewhere_is_dead_lettered(tmp_path: Path) -> None:
    base = tmp_path / "exports"
    elsewhere = tmp_path / "elsewhere" / "x.jsonl"
    records = [{"path": str(base / "a.jsonl")}, {"path": str(elsewhere)}]
    result = destination("{{ record.path }}", base_dir=str(base)).deliver([records])
    assert result.delivered == 1 and [r.record for r in result.rejections] == [records[1]]
    assert str(elsewhere) in result.rejections[0].reason
    assert not elsewhere.parent.exists()


def test_a_symlink_inside_base_dir_pointing_outside_is_refused(tmp_path: Path) -> None:
    base = tmp_path / "exports"
    outside = tmp_path / "outside"
    base.mkdir()
    outside.mkdir()
    (base / "link").symlink_to(outside, target_is_directory=True)
    template = str(base) + "/{{ record.dir }}/out.jsonl"
    records = [{"dir": "link"}, {"dir": "real"}]
    result = destination(template, base_dir=str(base)).deliver([records])
    assert result.delivered == 1 and [r.record for r in result.rejections] == [records[0]]
    assert "symlinks" in result.rejections[0].reason
    assert list(outside.iterdir()) == []
    with pytest.raises(DestinationError, match="outside base_dir"):
        deliver(base / "link" / "static.jsonl", [[{"a": 1}]], base_dir=str(base))


def test_relative_base_dir_is_the_route_folder_s(tmp_path: Path) -> None:
    context = RunContext(route="orders", route_file=str(tmp_path / "dags" / "o.route.yaml"))
    inside = destination("exports/{{ record.c }}.jsonl", context=context, base_dir="exports")
    result = inside.deliver([[{"c": "a"}, {"c": "../../b"}]])
    assert result.delivered == 1 and len(result.rejections) == 1
    assert (tmp_path / "dags" / "exports" / "a.jsonl").exists()


def test_a_batch_path_outside_base_dir_fails_before_writing(tmp_path: Path) -> None:
    template = str(tmp_path) + "/{{ params.folder }}/{{ batch }}.jsonl"
    context = RunContext(route="orders", params={"folder": "../escape"})
    with pytest.raises(DestinationError, match="outside base_dir"):
        destination(template, context=context, base_dir=str(tmp_path)).deliver([[{"a": 1}]])
    assert list(tmp_path.iterdir()) == []


# --- Through the delivery ledger ------------------------------------------------------------------


def _orders(records: int = 1000) -> list[dict[str, Any]]:
    return [
        {"id": n, "country": ["DE", "FR", "IT"][n % 3], "note": f"order {n}"}
        for n in range(records)
    ]


def _ids_in(folder: Path) -> list[int]:
    return sorted(record["id"] for path in folder.rglob("*.jsonl") for record in read_jsonl(path))


@pytest.mark.usefixtures("own_state_store")
def test_batch_files_are_ledger_batches_and_a_retry_skips_written_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_dataflow.pipeline.deliver import deliver as deliver_partition

    out = tmp_path / "out"
    route, context, partition = stage_partition(
        tmp_path,
        f'{{type: file, path: "{out}/{{{{ ds }}}}/{{{{ batch }}}}.jsonl", batch_size: 100}}',
        "run-1",
        _orders(),
        ds="2024-01-02",
    )
    with monkeypatch.context() as patch:
        injected = DestinationError("injected: the disk went away")
        fail_on_call(patch, file_destination.FileDestination, "_write", 4, injected)
        with pytest.raises(DestinationError, match="injected"):
            deliver_partition(route, "out", context, partition)
    assert sorted(p.name for p in (out / "2024-01-02").iterdir()) == [
        "0.jsonl",
        "1.jsonl",
        "2.jsonl",
    ]
    outcome = deliver_partition(route, "out", context, partition)  # the task's retry
    assert (outcome["delivered"], outcome["batches"], outcome["skipped"]) == (1000, 10, 3)
    assert len(list((out / "2024-01-02").iterdir())) == 10
    assert _ids_in(out) == list(range(1000))
    assert read_jsonl(out / "2024-01-02" / "3.jsonl")[0]["id"] == 300


@pytest.mark.usefixtures("own_state_store")
def test_refused_records_reach_the_dead_letters_and_the_counts(tmp_path: Path) -> None:
    from airflow_dataflow.pipeline.deliver import deliver as deliver_partition
    from airflow_dataflow.state.store import StateStore

    out = tmp_path / "out"
    route, context, partition = stage_partition(
        tmp_path,
        f'{{type: file, path: "{out}/{{{{ record.country }}}}/o.jsonl", base_dir: {out / "FR"}}}',
        "run-1",
        _orders(30),
        ds="2024-01-02",
    )
    outcome = deliver_partition(route, "out", context, partition)
    assert (outcome["delivered"], outcome["rejected"]) == (10, 20)
    assert _ids_in(out) == list(range(1, 30, 3))
    letters = StateStore.open().dead_letters("orders")
    assert len(letters) == 20 and "outside base_dir" in letters[0]["reason"]
    again = deliver_partition(route, "out", context, partition)  # a retry: skipped, same counts
    assert (again["delivered"], again["rejected"], again["skipped"]) == (10, 20, 1)


@pytest.mark.usefixtures("own_state_store")
@pytest.mark.parametrize(
    "path",
    ["{{ ds }}/part-{{ batch }}.jsonl", "{{ record.country }}/{{ ds }}.jsonl"],
    ids=["batch", "partitioned"],
)
def test_killed_mid_delivery_the_retry_writes_each_record_once(tmp_path: Path, path: str) -> None:
    from airflow_dataflow.pipeline.deliver import deliver as deliver_partition

    out = tmp_path / "out"
    route, context, partition = stage_partition(
        tmp_path,
        f'{{type: file, path: "{out}/{path}", batch_size: 100}}',
        "run-1",
        _orders(),
        ds="2024-01-02",
    )
    deliver_and_get_killed(route, context, partition, target="file:FileDestination._write", after=2)
    assert 0 < len(_ids_in(out)) < 1000  # two files written, then killed
    outcome = deliver_partition(route, "out", context, partition)  # the task's retry
    assert outcome["delivered"] == 1000
    assert _ids_in(out) == list(range(1000))  # each record once across the files


def test_the_docs_example_runs(tmp_path: Path, own_state_store: None) -> None:
    """docs/destinations/file.md's complete route, run phase by phase."""
    from airflow_dataflow.config import load_route
    from airflow_dataflow.pipeline.deliver import deliver as deliver_partition
    from airflow_dataflow.pipeline.extract import extract
    from airflow_dataflow.pipeline.route import route_records
    from airflow_dataflow.staging import StagingArea

    text = (ROOT / "docs" / "destinations" / "file.md").read_text(encoding="utf-8")
    (example,) = [b for b in _YAML.findall(text) if b.startswith("# dags/orders_export.route.yaml")]
    route_file = write_route(tmp_path / "dags", "orders_export", example)
    orders = [
        {"id": 1, "status": "paid", "amount": 250, "country": "DE", "at": "2024-01-02T10:00:00Z"},
        {"id": 2, "status": "paid", "amount": 40, "country": "FR", "at": "2024-01-02T11:00:00Z"},
        {"id": 3, "status": "open", "amount": 75, "country": "DE", "at": "2024-01-02T12:00:00Z"},
        {"id": 4, "status": "paid", "amount": 99, "country": "../../etc", "at": None},
        {"id": 5, "status": "paid", "amount": 10, "country": "DE", "at": "2024-01-02T13:30:00Z"},
    ]
    write_jsonl(tmp_path / "dags" / "data" / "orders.jsonl", orders)
    route = load_route(route_file)
    context = RunContext(
        route="orders_export", run_id="manual__1", ds="2024-01-02", route_file=str(route_file)
    )
    staging = StagingArea(f"file://{tmp_path / 'staging'}", "orders_export", "manual__1")
    routing = route_records(route, context, staging, extract(route, context, staging))
    outcomes = {
        name: deliver_partition(route, name, context, partition)
        for name, partition in routing["partitions"].items()
    }
    assert {name: o["delivered"] for name, o in outcomes.items()} == {"paid": 3, "other": 1}
    assert outcomes["paid"]["rejected"] == 1  # country "../../etc" leaves exports/paid
    import pyarrow.parquet as pq

    exports = tmp_path / "dags" / "exports"
    de = pq.read_table(exports / "paid" / "DE" / "2024-01-02.parquet")
    assert de.column("id").to_pylist() == [1, 5]
    assert str(de.schema.field("at").type) == "timestamp[us, tz=UTC]"
    assert read_jsonl_gz(exports / "other" / "2024-01-02" / "part-0.jsonl.gz") == [orders[2]]


def test_integers_beyond_64_bits_stay_exact_in_json_lines(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    deliver(out, [[{"big": 2**70, "small": 1}]])
    assert out.read_text(encoding="utf-8").strip() == '{"big": 1180591620717411303424, "small": 1}'


def test_base_dir_on_object_storage_is_a_url_prefix(memory_root: str) -> None:
    base = f"memory://{memory_root}/exports"
    target = destination(f"{base}/{{{{ record.c }}}}.jsonl", base_dir=base)
    result = target.deliver([[{"c": "a"}, {"c": "../../other"}]])
    assert result.delivered == 1 and len(result.rejections) == 1
    assert "outside base_dir" in result.rejections[0].reason
    assert fsspec.filesystem("memory").cat(f"/{memory_root}/exports/a.jsonl") == b'{"c":"a"}\n'


def test_an_undefined_run_variable_beside_record_fields_fails_the_delivery(
    tmp_path: Path,
) -> None:
    """A typo is not the records' fault: nothing is dead-lettered, nothing written."""
    target = destination(str(tmp_path) + "/{{ record.c }}/{{ dss }}.jsonl", name="parts")
    with pytest.raises(DestinationError, match="undefined dss") as caught:
        target.deliver([[{"c": "a"}]])
    assert "'parts'" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_jsonl_from_staging_copies_the_staged_lines_byte_for_byte(tmp_path: Path) -> None:
    """The JSON Lines fast path (staged lines copied) writes what encoding each record writes."""
    import io

    from airflow_dataflow.destinations.formats import Counter as WriteCounter
    from airflow_dataflow.destinations.formats import write_records
    from airflow_dataflow.staging import StagedBatches, StagingArea

    records = [
        {"id": 1, "name": "Zoë ✓", "amount": 12.5, "tags": ["a", {"b": None}]},
        {"big": 2**70, "nested": {"x": [1, 2.0, True]}},  # staged by the standard library
        {"text": "{{ 7*7 }}", "quote": 'say "hi"\n', "float": 1e-7},
        {},
    ] * 3
    staging = StagingArea(f"file://{tmp_path}", "orders", "run-1", chunk_size=5)
    with staging.writer("to-out") as writer:
        for record in records:
            writer.write(record)
        manifest = writer.close()
    staged = StagedBatches(manifest, batch_size=4)
    copied, encoded = io.BytesIO(), io.BytesIO()
    counters = WriteCounter(), WriteCounter()
    write_records(copied, staged, "jsonl", None, counters[0])
    write_records(encoded, list(staged), "jsonl", None, counters[1])  # a plain list: encoded
    assert copied.getvalue() == encoded.getvalue()
    assert counters[0].count == counters[1].count == len(records)
    assert [json.loads(line) for line in copied.getvalue().splitlines()] == records
