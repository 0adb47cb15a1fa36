"""Staging: chunked JSON Lines files, manifests, re-iterable batches, cleanup, bounded memory."""

from __future__ import annotations

import gc
import json
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest

from airflow_dataflow.staging import (
    StagedBatches,
    StagingArea,
    read_chunks,
    safe_segment,
)

RUN_ID = "manual__2024-01-01T00:00:00+00:00"


def area(tmp_path: Path, *, chunk_size: int = 2, run_id: str = RUN_ID) -> StagingArea:
    return StagingArea(f"file://{tmp_path}/staging", "orders", run_id, chunk_size=chunk_size)


def stage(staging: StagingArea, records: list[object], name: str = "extract") -> dict:
    with staging.writer(name) as writer:
        writer.write_many(records)
        return writer.close()


# --- Chunks and manifests ---------------------------------------------------------------------


def test_chunking_at_chunk_size(tmp_path: Path) -> None:
    manifest = stage(area(tmp_path, chunk_size=2), [{"n": 1}, {"n": 2}, {"n": 3}])
    assert manifest["count"] == 3
    assert [chunk["count"] for chunk in manifest["chunks"]] == [2, 1]


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 7])
def test_write_lines_chunks_exactly_like_write_line(tmp_path: Path, chunk_size: int) -> None:
    from airflow_dataflow.jsonable import dumps_line

    lines = [dumps_line({"n": n}) for n in range(10)]
    one = StagingArea(f"file://{tmp_path}/a", "orders", RUN_ID, chunk_size=chunk_size)
    many = StagingArea(f"file://{tmp_path}/b", "orders", RUN_ID, chunk_size=chunk_size)
    with one.writer("x") as single, many.writer("x") as batched:
        for line in lines:
            single.write_line(line)
        for batch in ([], lines[:1], lines[1:5], [], lines[5:]):
            batched.write_lines(batch)
        expected, got = single.close(), batched.close()
    assert [c["count"] for c in got["chunks"]] == [c["count"] for c in expected["chunks"]]
    assert got["count"] == expected["count"] == 10
    assert [record for _, _, record in read_chunks(got)] == [{"n": n} for n in range(10)]


def test_non_string_keys_are_staged_as_strings(tmp_path: Path) -> None:
    from airflow_dataflow.jsonable import dumps_line

    assert dumps_line({1: "a", "b": {2.5: None}}) == b'{"1":"a","b":{"2.5":null}}\n'


def test_manifest_shape_and_chunk_files(tmp_path: Path) -> None:
    staging = area(tmp_path, chunk_size=2)
    manifest = stage(staging, [{"n": n} for n in range(5)])
    assert set(manifest) == {"chunks", "count"}
    assert all(set(chunk) == {"uri", "count"} for chunk in manifest["chunks"])
    run_folder = tmp_path / "staging" / "orders" / "runs" / "manual__2024-01-01T00_00_00_00_00"
    assert manifest == {
        "chunks": [
            {"uri": f"file://{run_folder}/extract-00000.jsonl", "count": 2},
            {"uri": f"file://{run_folder}/extract-00001.jsonl", "count": 2},
            {"uri": f"file://{run_folder}/extract-00002.jsonl", "count": 1},
        ],
        "count": 5,
    }
    assert (run_folder / "extract-00000.jsonl").read_text(encoding="utf-8") == (
        '{"n":0}\n{"n":1}\n'
    )
    json.dumps(manifest)  # XCom-ready: plain JSON


def test_exact_multiple_of_chunk_size_opens_no_empty_chunk(tmp_path: Path) -> None:
    manifest = stage(area(tmp_path, chunk_size=2), [{"n": n} for n in range(4)])
    assert [chunk["count"] for chunk in manifest["chunks"]] == [2, 2]


def test_nothing_written_gives_an_empty_manifest(tmp_path: Path) -> None:
    manifest = stage(area(tmp_path), [])
    assert manifest == {"chunks": [], "count": 0}
    assert list(read_chunks(manifest)) == []
    assert list(StagedBatches(manifest)) == []


def test_writers_of_one_run_do_not_collide(tmp_path: Path) -> None:
    staging = area(tmp_path)
    first = stage(staging, [{"d": "a"}], name="deliver_a")
    second = stage(staging, [{"d": "b"}], name="deliver_b")
    assert first["chunks"][0]["uri"] != second["chunks"][0]["uri"]
    assert [record for _, _, record in read_chunks(first)] == [{"d": "a"}]
    assert [record for _, _, record in read_chunks(second)] == [{"d": "b"}]


def test_values_are_staged_as_json(tmp_path: Path) -> None:
    from datetime import date
    from decimal import Decimal

    values = [{"d": date(2024, 1, 2), "x": Decimal("1.5"), "nan": float("nan")}, [1, "two"], "s"]
    manifest = stage(area(tmp_path), values)
    assert [record for _, _, record in read_chunks(manifest)] == [
        {"d": "2024-01-02", "x": 1.5, "nan": None},
        [1, "two"],
        "s",
    ]


# --- Reading back -----------------------------------------------------------------------------


def test_read_chunks_yields_uri_line_and_record_in_order(tmp_path: Path) -> None:
    manifest = stage(area(tmp_path, chunk_size=2), [{"n": n} for n in range(3)])
    first, second = (chunk["uri"] for chunk in manifest["chunks"])
    assert list(read_chunks(manifest)) == [
        (first, 1, {"n": 0}),
        (first, 2, {"n": 1}),
        (second, 1, {"n": 2}),
    ]


def test_staged_batches_are_re_iterable_with_batch_sizes(tmp_path: Path) -> None:
    manifest = stage(area(tmp_path, chunk_size=3), [{"n": n} for n in range(7)])
    batches = StagedBatches(manifest, batch_size=2)
    first_pass = list(batches)
    assert [len(batch) for batch in first_pass] == [2, 2, 2, 1]
    assert [record["n"] for batch in first_pass for record in batch] == list(range(7))
    assert list(batches) == first_pass  # a second pass reads the same records again
    assert [len(batch) for batch in StagedBatches(manifest, batch_size=10)] == [7]
    assert [len(batch) for batch in StagedBatches(manifest, batch_size=7)] == [7]


# --- Cleanup and names ------------------------------------------------------------------------


def test_clean_removes_the_run_folder_only(tmp_path: Path) -> None:
    staging = area(tmp_path)
    stage(staging, [{"n": 1}, {"n": 2}, {"n": 3}])
    other_run = area(tmp_path, run_id="scheduled__2024-01-02T00:00:00+00:00")
    kept = stage(other_run, [{"n": 9}])
    run_folder = Path(staging.run_url.removeprefix("file://"))
    assert run_folder.is_dir()
    staging.clean()
    assert not run_folder.exists()
    assert [record for _, _, record in read_chunks(kept)] == [{"n": 9}]
    staging.clean()  # a second clean (a retried commit) is harmless


def test_clean_keeps_staged_dead_letters(tmp_path: Path) -> None:
    staging = area(tmp_path)
    stage(staging, [{"n": 1}])
    dead = Path(staging.dead_letter_url().removeprefix("file://"))
    dead.parent.mkdir(parents=True)
    dead.write_text('{"n": 0}\n', encoding="utf-8")
    staging.clean()
    assert dead.read_text(encoding="utf-8") == '{"n": 0}\n'


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("manual__2024-01-01T00:00:00+00:00", "manual__2024-01-01T00_00_00_00_00"),
        (
            "scheduled__2024-01-01T00:00:00.123456+00:00",
            "scheduled__2024-01-01T00_00_00.123456_00_00",
        ),
        ("orders", "orders"),
        ("a/b\\c", "a_b_c"),
        ("../../etc", "etc"),
        ("..", "_"),
        ("", "_"),
        ("name with spaces", "name_with_spaces"),
    ],
)
def test_safe_segment(value: str, expected: str) -> None:
    assert safe_segment(value) == expected


def test_safe_segment_never_escapes_the_folder() -> None:
    for value in ["..", "../x", "/abs", "a/../../b", ".hidden", "a:b", "a?b*c[d]"]:
        segment = safe_segment(value)
        assert "/" not in segment and "\\" not in segment
        assert segment not in (".", "..")
        assert not any(char in segment for char in "*?[:")


def test_run_folder_uses_safe_segments(tmp_path: Path) -> None:
    staging = StagingArea(f"file://{tmp_path}/", "my route", RUN_ID)
    assert staging.run_url == f"file://{tmp_path}/my_route/runs/manual__2024-01-01T00_00_00_00_00"


# --- Object storage ---------------------------------------------------------------------------


def test_staging_on_a_memory_url(memory_root: str) -> None:
    staging = StagingArea(f"memory://{memory_root}/staging", "orders", RUN_ID, chunk_size=2)
    manifest = stage(staging, [{"n": n} for n in range(3)])
    assert [chunk["count"] for chunk in manifest["chunks"]] == [2, 1]
    assert all(chunk["uri"].startswith(f"memory://{memory_root}/") for chunk in manifest["chunks"])
    assert [record["n"] for batch in StagedBatches(manifest, 2) for record in batch] == [0, 1, 2]
    staging.clean()
    fs = fsspec.filesystem("memory")
    assert not fs.exists(f"/{memory_root}/staging/orders/runs/manual__2024-01-01T00_00_00_00_00")


# --- Bounded memory ---------------------------------------------------------------------------


def test_staging_streams_with_bounded_memory(tmp_path: Path) -> None:
    """200k records (> 30 MB of JSON) staged and read back with a peak far below the data size."""
    total = 200_000
    padding = "x" * 150

    def generate() -> Iterator[dict[str, object]]:
        for n in range(total):
            yield {"id": n, "name": f"customer-{n}", "padding": padding, "amount": n * 1.5}

    staging = area(tmp_path, chunk_size=50_000)
    gc.collect()
    tracemalloc.start()
    try:
        with staging.writer("extract") as writer:
            writer.write_many(generate())
            manifest = writer.close()
        seen = 0
        checksum = 0
        for _, _, record in read_chunks(manifest):
            seen += 1
            checksum += record["id"]
        batches = 0
        for batch in StagedBatches(manifest, batch_size=1000):
            batches += len(batch)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    data_size = sum(
        Path(chunk["uri"].removeprefix("file://")).stat().st_size for chunk in manifest["chunks"]
    )
    assert manifest["count"] == seen == batches == total
    assert checksum == total * (total - 1) // 2
    assert [chunk["count"] for chunk in manifest["chunks"]] == [50_000] * 4
    assert data_size > 30 * 1024 * 1024
    assert peak < 20 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB for {data_size / 2**20:.1f} MiB"


# --- Line format (orjson, with a standard-library fallback) -----------------------------------


def test_lines_round_trip_what_the_fast_encoder_cannot_write(tmp_path: Path) -> None:
    from airflow_dataflow.jsonable import dumps_line, loads_line

    deep: object = 1
    for _ in range(300):  # deeper than orjson's 255 levels
        deep = [deep]
    values = [
        {"big": 2**70, "neg": -(2**80)},  # integers beyond 64 bits stay exact
        {"s": "lone \ud800 surrogate"},
        deep,
        {"nan": float("nan"), "inf": float("-inf"), 1: "int key"},
        {"plain": "é", "n": 1.5},
    ]
    for value in values:
        line = dumps_line(value)
        assert line.endswith(b"\n")
        back = loads_line(line)
        if isinstance(value, dict) and "nan" in value:
            assert back == {"nan": None, "inf": None, "1": "int key"}
        else:
            assert back == value
    manifest = stage(area(tmp_path, chunk_size=10), values)
    assert next(record for _, _, record in read_chunks(manifest)) == values[0]


def test_a_line_that_does_not_decode_names_chunk_and_line(tmp_path: Path) -> None:
    from airflow_dataflow.staging import StagedLineError

    staging = area(tmp_path, chunk_size=10)
    with staging.writer("extract") as writer:
        writer.write({"n": 1})
        writer.write_line(b"{not json\n")
        manifest = writer.close()
    uri = manifest["chunks"][0]["uri"]
    with pytest.raises(StagedLineError, match=f"{uri}:2: staged line is not valid JSON"):
        list(read_chunks(manifest))
