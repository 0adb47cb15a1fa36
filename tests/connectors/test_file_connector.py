"""The ``file`` connector: every format, globs, relative paths, errors and object storage."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import fsspec
import pytest
from pydantic import ValidationError

from airflow_dataflow.connectors.base import BadRecord
from airflow_dataflow.connectors.file import FileConnector, FileSourceSettings
from airflow_dataflow.context import RunContext
from airflow_dataflow.errors import SourceError
from tests.support.routes import write_jsonl


def read(
    path: str | Path, *, format: str | None = None, encoding: str | None = None, **context: Any
) -> list[Any]:
    extra = {} if encoding is None else {"encoding": encoding}
    settings = FileSourceSettings(type="file", path=str(path), format=format, **extra)
    return list(FileConnector(settings, RunContext(route="orders", **context)).read())


def records(items: list[Any]) -> list[Any]:
    return [item for item in items if not isinstance(item, BadRecord)]


def bad(items: list[Any]) -> list[BadRecord]:
    return [item for item in items if isinstance(item, BadRecord)]


# --- JSON Lines ---------------------------------------------------------------------------


def test_jsonl_reads_records_in_order_and_skips_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "orders.jsonl"
    path.write_text('{"id": 1}\n\n   \n{"id": 2, "nested": {"a": [1, 2]}}\n', encoding="utf-8")
    assert read(path) == [{"id": 1}, {"id": 2, "nested": {"a": [1, 2]}}]


def test_jsonl_invalid_line_is_a_bad_record_with_position_and_raw_line(tmp_path: Path) -> None:
    path = tmp_path / "orders.jsonl"
    path.write_text('{"id": 1}\n\n{"id": 2,\n{"id": 3}\n', encoding="utf-8")
    items = read(path)
    assert records(items) == [{"id": 1}, {"id": 3}]
    [problem] = bad(items)
    assert problem.position == f"{path}:3"
    assert problem.raw == '{"id": 2,'
    assert "invalid JSON" in problem.error
    assert items.index(problem) == 1  # kept in input order


def test_jsonl_crlf_line_endings(tmp_path: Path) -> None:
    path = tmp_path / "orders.jsonl"
    path.write_bytes(b'{"id": 1}\r\nnope\r\n{"id": 2}\r\n')
    items = read(path)
    assert records(items) == [{"id": 1}, {"id": 2}]
    assert bad(items)[0].raw == "nope"
    assert bad(items)[0].position == f"{path}:2"


def test_jsonl_gz_is_decompressed(tmp_path: Path) -> None:
    path = tmp_path / "orders.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"id": 1}\n{"id": 2}\n'))
    assert read(path) == [{"id": 1}, {"id": 2}]


def test_non_object_json_values_pass_through(tmp_path: Path) -> None:
    """The router dead-letters non-objects; the connector only decodes."""
    path = tmp_path / "mixed.jsonl"
    path.write_text('[1, 2]\n"text"\n3\n', encoding="utf-8")
    assert read(path) == [[1, 2], "text", 3]


# --- JSON -----------------------------------------------------------------------------------


def test_json_array_gives_one_record_per_element(tmp_path: Path) -> None:
    path = tmp_path / "orders.json"
    path.write_text(json.dumps([{"id": 1}, {"id": 2}], indent=2), encoding="utf-8")
    assert read(path) == [{"id": 1}, {"id": 2}]


def test_json_single_object_is_one_record(tmp_path: Path) -> None:
    path = tmp_path / "order.json"
    path.write_text('{"id": 1, "tags": ["a"]}', encoding="utf-8")
    assert read(path) == [{"id": 1, "tags": ["a"]}]


def test_invalid_json_document_is_one_bad_record(tmp_path: Path) -> None:
    path = tmp_path / "orders.json"
    text = '[\n  {"id": 1},\n  {"id": 2\n]\n'
    path.write_text(text, encoding="utf-8")
    [problem] = read(path)
    assert isinstance(problem, BadRecord)
    assert problem.position.startswith(f"{path}:")
    assert problem.position == f"{path}:4"
    assert problem.raw == text
    assert "invalid JSON" in problem.error


# --- CSV ------------------------------------------------------------------------------------


def test_csv_values_stay_strings(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    path.write_text('id,amount,note\n1,10.5,"a, quoted"\n2,,x\n', encoding="utf-8")
    assert read(path) == [
        {"id": "1", "amount": "10.5", "note": "a, quoted"},
        {"id": "2", "amount": "", "note": "x"},
    ]


def test_csv_wrong_arity_row_is_a_bad_record(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    path.write_text("id,amount\n1,10\n2,20,extra\n3\n4,40\n", encoding="utf-8")
    items = read(path)
    assert records(items) == [{"id": "1", "amount": "10"}, {"id": "4", "amount": "40"}]
    too_many, too_few = bad(items)
    assert too_many.position == f"{path}:3"
    assert too_many.raw == ["2", "20", "extra"]
    assert "3 fields" in too_many.error and "header has 2" in too_many.error
    assert too_few.position == f"{path}:4"
    assert too_few.raw == ["3"]


def test_csv_header_only_or_empty_gives_nothing(tmp_path: Path) -> None:
    header_only = tmp_path / "header.csv"
    header_only.write_text("id,amount\n", encoding="utf-8")
    empty = tmp_path / "empty.csv"
    empty.write_text("", encoding="utf-8")
    assert read(header_only) == []
    assert read(empty) == []


def test_csv_gz(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv.gz"
    path.write_bytes(gzip.compress(b"id,name\n1,\xc3\xa9t\xc3\xa9\n"))
    assert read(path) == [{"id": "1", "name": "été"}]


# --- Parquet --------------------------------------------------------------------------------


def test_parquet_records_are_dicts(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        {"id": 1, "name": "a", "amount": 1.5, "tags": ["x"]},
        {"id": 2, "name": None, "amount": 2.0, "tags": []},
    ]
    path = tmp_path / "orders.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    items = read(path)
    assert items == rows
    assert all(type(item) is dict for item in items)


# --- Globs and formats ----------------------------------------------------------------------


def test_glob_reads_every_file_in_name_order(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in" / "b.jsonl", [{"f": "b"}])
    write_jsonl(tmp_path / "in" / "a.jsonl", [{"f": "a1"}, {"f": "a2"}])
    write_jsonl(tmp_path / "in" / "c.jsonl", [{"f": "c"}])
    (tmp_path / "in" / "ignored.csv").write_text("f\nz\n", encoding="utf-8")
    assert read(tmp_path / "in" / "*.jsonl") == [{"f": "a1"}, {"f": "a2"}, {"f": "b"}, {"f": "c"}]


def test_glob_mixing_formats_reads_each_by_its_extension(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in" / "1.jsonl", [{"n": 1}])
    (tmp_path / "in" / "2.csv").write_text("n\n2\n", encoding="utf-8")
    (tmp_path / "in" / "3.json").write_text('[{"n": 3}]', encoding="utf-8")
    assert read(tmp_path / "in" / "*") == [{"n": 1}, {"n": "2"}, {"n": 3}]


def test_recursive_glob(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in" / "2024" / "01" / "x.jsonl", [{"n": 1}])
    write_jsonl(tmp_path / "in" / "2024" / "02" / "x.jsonl", [{"n": 2}])
    assert read(tmp_path / "in" / "**" / "*.jsonl") == [{"n": 1}, {"n": 2}]


def test_explicit_format_overrides_the_extension(tmp_path: Path) -> None:
    odd = tmp_path / "orders.txt"
    odd.write_text('{"id": 1}\n{"id": 2}\n', encoding="utf-8")
    assert read(odd, format="jsonl") == [{"id": 1}, {"id": 2}]
    lines_in_json = tmp_path / "orders.json"
    lines_in_json.write_text('{"id": 1}\n{"id": 2}\n', encoding="utf-8")
    assert read(lines_in_json, format="jsonl") == [{"id": 1}, {"id": 2}]
    csv_as_txt = tmp_path / "orders.dat"
    csv_as_txt.write_text("id\n7\n", encoding="utf-8")
    assert read(csv_as_txt, format="csv") == [{"id": "7"}]


def test_ndjson_extension_is_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "orders.ndjson"
    path.write_text('{"id": 1}\n', encoding="utf-8")
    assert read(path) == [{"id": 1}]


def test_unknown_extension_names_the_route_and_source_format(tmp_path: Path) -> None:
    path = tmp_path / "orders.txt"
    path.write_text('{"id": 1}\n', encoding="utf-8")
    with pytest.raises(SourceError) as caught:
        read(path)
    message = str(caught.value)
    assert "'orders'" in message
    assert "source.format" in message
    assert str(path) in message


# --- Missing input and relative paths --------------------------------------------------------


def test_missing_file_names_the_route_and_source_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(SourceError) as caught:
        read(missing)
    message = str(caught.value)
    assert "'orders'" in message
    assert "source.path" in message
    assert str(missing) in message


def test_glob_matching_nothing_names_the_route_and_source_path(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "other.csv").write_text("a\n1\n", encoding="utf-8")
    with pytest.raises(SourceError) as caught:
        read(tmp_path / "in" / "*.jsonl")
    message = str(caught.value)
    assert "'orders'" in message and "source.path" in message
    assert "*.jsonl" in message


def test_a_directory_is_not_a_file(tmp_path: Path) -> None:
    (tmp_path / "dir.jsonl").mkdir()
    with pytest.raises(SourceError, match=r"source\.path"):
        read(tmp_path / "dir.jsonl")


def test_relative_path_resolves_against_the_route_file_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    routes = tmp_path / "dags" / "sales"
    write_jsonl(routes / "data" / "orders.jsonl", [{"id": 1}])
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # not where the data is
    route_file = str(routes / "orders.route.yaml")
    assert read("data/orders.jsonl", route_file=route_file) == [{"id": 1}]
    assert read("data/*.jsonl", route_file=route_file) == [{"id": 1}]
    with pytest.raises(SourceError) as caught:
        read("data/missing.jsonl", route_file=route_file)
    assert str(routes / "data" / "missing.jsonl") in str(caught.value)


def test_absolute_path_ignores_the_route_file_folder(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "abs.jsonl", [{"id": 1}])
    assert read(path, route_file=str(tmp_path / "other" / "r.route.yaml")) == [{"id": 1}]


def test_read_streams_lazily(tmp_path: Path) -> None:
    """Nothing is opened before iteration, and iteration yields one record at a time."""
    path = write_jsonl(tmp_path / "orders.jsonl", [{"id": n} for n in range(5)])
    settings = FileSourceSettings(type="file", path=str(path))
    iterator = FileConnector(settings, RunContext(route="orders")).read()
    assert next(iterator) == {"id": 0}
    assert next(iterator) == {"id": 1}


# --- Object storage (fsspec memory:// through ObjectStoragePath) -----------------------------


def test_memory_url_single_file(memory_root: str) -> None:
    fs = fsspec.filesystem("memory")
    fs.pipe(f"/{memory_root}/in/orders.jsonl", b'{"id": 1}\nbroken\n{"id": 2}\n')
    items = read(f"memory://{memory_root}/in/orders.jsonl")
    assert records(items) == [{"id": 1}, {"id": 2}]
    [problem] = bad(items)
    assert problem.position == f"memory://{memory_root}/in/orders.jsonl:2"
    assert problem.raw == "broken"


def test_memory_url_glob_in_name_order(memory_root: str) -> None:
    fs = fsspec.filesystem("memory")
    fs.pipe(f"/{memory_root}/in/b.jsonl", b'{"f": "b"}\n')
    fs.pipe(f"/{memory_root}/in/a.jsonl", b'{"f": "a"}\n')
    fs.pipe(f"/{memory_root}/in/c.jsonl.gz", gzip.compress(b'{"f": "c"}\n'))
    fs.pipe(f"/{memory_root}/in/skip.csv", b"f\nz\n")
    assert read(f"memory://{memory_root}/in/*.jsonl") == [{"f": "a"}, {"f": "b"}]
    assert read(f"memory://{memory_root}/in/*.jsonl*") == [{"f": "a"}, {"f": "b"}, {"f": "c"}]


def test_memory_url_csv_and_parquet(memory_root: str) -> None:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    fs = fsspec.filesystem("memory")
    fs.pipe(f"/{memory_root}/in/a.csv", b"id,x\n1,2\n")
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist([{"id": 3}]), buffer)
    fs.pipe(f"/{memory_root}/in/b.parquet", buffer.getvalue())
    assert read(f"memory://{memory_root}/in/*") == [{"id": "1", "x": "2"}, {"id": 3}]


def test_memory_url_matching_nothing_is_a_source_error(memory_root: str) -> None:
    fsspec.filesystem("memory").pipe(f"/{memory_root}/in/a.csv", b"id\n1\n")
    with pytest.raises(SourceError) as caught:
        read(f"memory://{memory_root}/in/*.jsonl")
    assert "'orders'" in str(caught.value) and "source.path" in str(caught.value)
    with pytest.raises(SourceError, match=r"source\.path"):
        read(f"memory://{memory_root}/in/missing.jsonl")


def test_url_is_not_resolved_against_the_route_folder(memory_root: str, tmp_path: Path) -> None:
    fsspec.filesystem("memory").pipe(f"/{memory_root}/x.jsonl", b'{"id": 1}\n')
    route_file = str(tmp_path / "r.route.yaml")
    assert read(f"memory://{memory_root}/x.jsonl", route_file=route_file) == [{"id": 1}]


def test_path_is_a_template_over_the_run(tmp_path: Path) -> None:
    (tmp_path / "2024-05-01").mkdir()
    (tmp_path / "2024-05-01" / "eu.jsonl").write_text('{"id": 1}\n')
    (tmp_path / "2024-05-02").mkdir()
    (tmp_path / "2024-05-02" / "eu.jsonl").write_text('{"id": 2}\n')
    template = str(tmp_path / "{{ ds }}" / "{{ params.region }}.jsonl")
    assert read(template, ds="2024-05-02", params={"region": "eu"}) == [{"id": 2}]


# --- Encodings ------------------------------------------------------------------------------


def test_jsonl_invalid_byte_mid_file_is_a_bad_record_and_the_rest_comes_through(
    tmp_path: Path,
) -> None:
    path = tmp_path / "orders.jsonl"
    path.write_bytes(
        b'{"id": 1}\n{"id": 2, "name": "caf\xe9"}\r\n{"id": 3, "name": "\xc3\xa9t\xc3\xa9"}\n'
    )
    items = read(path)
    assert records(items) == [{"id": 1}, {"id": 3, "name": "été"}]
    [problem] = bad(items)
    assert items.index(problem) == 1  # kept in input order
    assert problem.position == f"{path}:2"
    assert "not valid utf-8" in problem.error
    assert "e9" in problem.error
    assert problem.raw == '{"id": 2, "name": "caf\\xe9"}'
    assert json.loads(json.dumps(problem.raw)) == problem.raw  # a JSON-serialisable dead letter


def test_jsonl_gz_invalid_byte_is_a_bad_record(tmp_path: Path) -> None:
    path = tmp_path / "orders.jsonl.gz"
    path.write_bytes(gzip.compress(b'\xff\n{"id": 2}\n'))
    items = read(path)
    assert records(items) == [{"id": 2}]
    assert bad(items)[0].position == f"{path}:1"
    assert bad(items)[0].raw == "\\xff"


def test_jsonl_in_latin_1(tmp_path: Path) -> None:
    path = tmp_path / "orders.jsonl"
    path.write_bytes('{"name": "café"}\n{"name": "Köln"}\n'.encode("latin-1"))
    assert read(path, encoding="latin-1") == [{"name": "café"}, {"name": "Köln"}]


def test_jsonl_in_utf_16(tmp_path: Path) -> None:
    path = tmp_path / "orders.jsonl"
    path.write_bytes('{"name": "café"}\n\n{"id": 2}\n'.encode("utf-16"))
    assert read(path, encoding="utf-16") == [{"name": "café"}, {"id": 2}]


def test_jsonl_in_utf_16_that_does_not_decode_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "orders.jsonl"
    path.write_bytes('{"id": 1}\n'.encode("utf-16-le") + b"\x00\xdc" + "\n".encode("utf-16-le"))
    with pytest.raises(SourceError) as caught:
        read(path, encoding="utf-16-le")
    message = str(caught.value)
    assert "'orders'" in message and str(path) in message
    assert "not valid utf-16-le" in message and "source.encoding" in message


def test_utf_8_byte_order_mark_is_skipped(tmp_path: Path) -> None:
    bom = b"\xef\xbb\xbf"
    (tmp_path / "a.jsonl").write_bytes(bom + b'{"id": 1}\n')
    (tmp_path / "b.json").write_bytes(bom + b'[{"id": 2}]')
    (tmp_path / "c.csv").write_bytes(bom + b"id,name\r\n3,x\r\n")
    assert read(tmp_path / "*") == [{"id": 1}, {"id": 2}, {"id": "3", "name": "x"}]


def test_json_document_that_does_not_decode_is_one_bad_record(tmp_path: Path) -> None:
    path = tmp_path / "orders.json"
    path.write_bytes(b'[\n  {"id": 1},\n  {"name": "caf\xe9"}\n]\n')
    [problem] = read(path)
    assert isinstance(problem, BadRecord)
    assert problem.position == f"{path}:3"
    assert "not valid utf-8" in problem.error
    assert problem.raw == '[\n  {"id": 1},\n  {"name": "caf\\xe9"}\n]\n'


def test_json_in_latin_1(tmp_path: Path) -> None:
    path = tmp_path / "orders.json"
    path.write_bytes('[{"name": "café"}]'.encode("latin-1"))
    assert read(path, encoding="latin-1") == [{"name": "café"}]


def test_csv_in_latin_1_and_cp1252(tmp_path: Path) -> None:
    latin = tmp_path / "latin.csv"
    latin.write_bytes("id,name\n1,café\n".encode("latin-1"))
    assert read(latin, encoding="latin-1") == [{"id": "1", "name": "café"}]
    windows = tmp_path / "windows.csv"
    windows.write_bytes("id,price\n1,€5\n".encode("cp1252"))
    assert read(windows, encoding="cp1252") == [{"id": "1", "price": "€5"}]


def test_csv_in_utf_16(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    path.write_bytes("id,name\r\n1,été\r\n".encode("utf-16"))
    assert read(path, encoding="utf-16") == [{"id": "1", "name": "été"}]


def test_csv_that_does_not_decode_names_route_file_line_and_remedy(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    rows = b"".join(b"%d,plain\n" % n for n in range(2, 5000))
    path.write_bytes(b"id,name\n" + rows + b"5000,caf\xe9\n5001,x\n")
    with pytest.raises(SourceError) as caught:
        read(path)
    message = str(caught.value)
    assert "'orders'" in message
    assert str(path) in message
    assert "not valid utf-8" in message
    assert "line 5000" in message
    assert "source.encoding" in message


def test_unknown_encoding_is_rejected_naming_it() -> None:
    with pytest.raises(ValidationError, match="'utf-9'"):
        FileSourceSettings(type="file", path="in.jsonl", encoding="utf-9")
    with pytest.raises(ValidationError, match="'base64' is not a text encoding"):
        FileSourceSettings(type="file", path="in.jsonl", encoding="base64")
    assert FileSourceSettings(type="file", path="in.jsonl").encoding == "utf-8"
    assert (
        FileSourceSettings(type="file", path="in.jsonl", encoding="Latin-1").encoding == "Latin-1"
    )


def test_unknown_encoding_in_a_route_file_is_a_located_config_error() -> None:
    from airflow_dataflow.config import load_route_text
    from airflow_dataflow.errors import RouteConfigError

    text = (
        "source: {type: file, path: in.jsonl, encoding: klingon}\n"
        "destinations:\n"
        "  out: {type: file, path: out.jsonl}\n"
        "unmatched: [out]\n"
    )
    with pytest.raises(RouteConfigError) as caught:
        load_route_text(text, "t.route.yaml")
    [issue] = caught.value.issues
    assert issue.line == 1
    assert "'klingon'" in issue.message


# --- CSV problems ---------------------------------------------------------------------------


def test_csv_duplicate_header_names_route_file_and_names(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    path.write_text("id,name,amount,name,id,note\n1,a,2,b,3,c\n", encoding="utf-8")
    with pytest.raises(SourceError) as caught:
        read(path)
    message = str(caught.value)
    assert "'orders'" in message
    assert str(path) in message
    assert "'id', 'name'" in message
    assert "'amount'" not in message


def test_csv_field_over_the_field_limit_is_a_bad_record_and_reading_goes_on(
    tmp_path: Path,
) -> None:
    import csv

    huge = "x" * (csv.field_size_limit() + 10)
    path = tmp_path / "orders.csv"
    path.write_text(f"id,note\n1,ok\n2,{huge}\n3,fine\n", encoding="utf-8")
    items = read(path)
    assert records(items) == [{"id": "1", "note": "ok"}, {"id": "3", "note": "fine"}]
    [problem] = bad(items)
    assert items.index(problem) == 1
    assert problem.position == f"{path}:3"
    assert "field larger than field limit" in problem.error
    assert problem.raw == f"2,{huge}\n"  # the whole input line, nothing lost


def test_csv_row_spanning_lines_is_located_at_its_first_line(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    path.write_text('id,note\n1,"two\nlines",extra\n2,ok\n', encoding="utf-8")
    items = read(path)
    assert records(items) == [{"id": "2", "note": "ok"}]
    [problem] = bad(items)
    assert problem.position == f"{path}:2"
    assert problem.raw == ["1", "two\nlines", "extra"]


def test_too_deep_and_too_large_records_become_dead_letters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import airflow_dataflow.connectors.file as file_connector

    monkeypatch.setattr(file_connector, "MAX_RECORD_CHARS", 1_000_000)
    deep = "[" * 100_000 + "]" * 100_000
    path = tmp_path / "in.jsonl"
    path.write_text('{"id": 1}\n' + deep + "\n" + '{"big": "' + "x" * 2_000_000 + '"}\n{"id": 4}\n')
    records = read(path)
    assert records[0] == {"id": 1} and records[3] == {"id": 4}
    assert isinstance(records[1], BadRecord) and records[1].position.endswith("in.jsonl:2")
    assert "nested deeper" in records[1].error and records[1].raw == deep
    assert isinstance(records[2], BadRecord) and "over the limit of 1,000,000" in records[2].error
    assert len(records[2].raw) > 2_000_000  # kept whole: nothing lost
