"""The ``s3`` destination against moto's standalone server (a real S3 HTTP endpoint).

Objects are read back with boto3: formats, compression, partitioned and per-batch keys,
multipart uploads, retries, a process killed mid-delivery, bad buckets, unreachable endpoints
and masked credentials.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_dataflow.context import RunContext
from airflow_dataflow.destinations import s3 as s3_destination
from airflow_dataflow.destinations.policy import RateLimiter, RetryPolicy
from airflow_dataflow.destinations.s3 import S3Destination, S3DestinationSettings
from airflow_dataflow.errors import DestinationError, RetriableError
from tests.support.faults import deliver_and_get_killed, fail_on_call
from tests.support.moto_server import SECRET_KEY, S3Store, connection_json, moto_endpoint
from tests.support.routes import stage_partition

RECORDS = [
    {"id": 1, "name": "Ann", "country": "DE", "amount": 10.5},
    {"id": 2, "name": "Bob", "country": "FR", "tags": ["a", "b"]},
    {"id": 3, "name": "été", "country": "DE", "address": {"city": "Köln"}},
]


@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    yield from moto_endpoint()


@pytest.fixture
def store(moto: str) -> S3Store:
    return S3Store(moto)


@pytest.fixture
def bucket(store: S3Store) -> str:
    return store.new_bucket()


@pytest.fixture
def conn_id(moto: str, define_conn: Callable[..., str]) -> str:
    return define_conn(connection_json(moto), "aws")


@pytest.fixture
def make(conn_id: str, bucket: str) -> Callable[..., S3Destination]:
    def build(key: str, *, name: str = "lake", context: RunContext | None = None, **settings: Any):
        model = S3DestinationSettings(
            type="s3",
            connection=settings.pop("connection", conn_id),
            bucket=settings.pop("bucket", bucket),
            key=key,
            **settings,
        )
        return S3Destination(name, model, context or RunContext(route="orders", ds="2024-01-02"))

    return build


def _lines(data: bytes) -> list[Any]:
    return [json.loads(line) for line in data.splitlines()]


# --- Formats and compression --------------------------------------------------------------------


@pytest.mark.parametrize("file_format", ["jsonl", "json", "csv", "parquet"])
def test_each_format_reads_back(
    make: Callable[..., S3Destination], store: S3Store, bucket: str, file_format: str
) -> None:
    import pyarrow.parquet as pq

    result = make(f"exports/{{{{ ds }}}}/orders.{file_format}").deliver([RECORDS[:2], RECORDS[2:]])
    key = f"exports/2024-01-02/orders.{file_format}"
    assert result.delivered == 3
    assert result.locations == [f"s3://{bucket}/{key}"]
    assert store.keys(bucket) == [key]
    data = store.read(bucket, key)
    if file_format == "jsonl":
        assert data.decode("utf-8").endswith("\n") and _lines(data) == RECORDS
    elif file_format == "json":
        assert json.loads(data) == RECORDS
    elif file_format == "csv":
        rows = list(csv.DictReader(io.StringIO(data.decode("utf-8"))))
        assert [row["name"] for row in rows] == ["Ann", "Bob", "été"]
        assert json.loads(rows[1]["tags"]) == ["a", "b"]
    else:
        rows = pq.read_table(io.BytesIO(data)).to_pylist()
        assert [row["id"] for row in rows] == [1, 2, 3]
        assert rows[2]["address"] == {"city": "Köln"}


def test_parquet_timestamps_are_utc_microseconds(
    make: Callable[..., S3Destination], store: S3Store, bucket: str
) -> None:
    import pyarrow.parquet as pq

    records = [{"id": 1, "at": "2024-01-02T03:04:05+01:00"}, {"id": 2, "at": "2024-01-02T00:00Z"}]
    make("t.parquet", compression="zstd").deliver([records])
    parquet = pq.ParquetFile(io.BytesIO(store.read(bucket, "t.parquet")))
    assert str(parquet.schema_arrow.field("at").type) == "timestamp[us, tz=UTC]"
    assert parquet.metadata.row_group(0).column(0).compression == "ZSTD"


@pytest.mark.parametrize(
    ("key", "settings", "decompress"),
    [
        ("o.jsonl.gz", {}, gzip.decompress),
        ("o.jsonl", {"compression": "gzip"}, gzip.decompress),
        ("o.jsonl.zst", {}, None),
    ],
)
def test_compression(
    make: Callable[..., S3Destination],
    store: S3Store,
    bucket: str,
    key: str,
    settings: dict[str, Any],
    decompress: Callable[[bytes], bytes] | None,
) -> None:
    make(key, **settings).deliver([RECORDS])
    data = store.read(bucket, key)
    if decompress is None:
        import zstandard

        data = zstandard.ZstdDecompressor().stream_reader(data).read()
    else:
        data = decompress(data)
    assert _lines(data) == RECORDS


# --- Keys ---------------------------------------------------------------------------------------


def test_record_fields_in_the_key_give_one_object_per_rendered_key(
    make: Callable[..., S3Destination], store: S3Store, bucket: str
) -> None:
    target = make("orders/country={{ record.country }}/dt={{ ds }}/part.jsonl")
    assert (
        target.target()
        == f"s3://{bucket}/orders/country={{record.country}}/dt=2024-01-02/part.jsonl"
    )
    result = target.deliver([RECORDS[:1], RECORDS[1:]])
    assert result.delivered == 3
    assert store.keys(bucket) == [
        "orders/country=DE/dt=2024-01-02/part.jsonl",
        "orders/country=FR/dt=2024-01-02/part.jsonl",
    ]
    assert _lines(store.read(bucket, "orders/country=DE/dt=2024-01-02/part.jsonl")) == [
        RECORDS[0],
        RECORDS[2],
    ]


def test_batch_in_the_key_gives_one_object_per_batch(
    make: Callable[..., S3Destination], store: S3Store, bucket: str
) -> None:
    result = make("parts/{{ ds }}/{{ batch }}.jsonl").deliver([RECORDS[:2], RECORDS[2:]])
    assert result.delivered == 3
    assert store.keys(bucket) == ["parts/2024-01-02/0.jsonl", "parts/2024-01-02/1.jsonl"]
    assert _lines(store.read(bucket, "parts/2024-01-02/1.jsonl")) == [RECORDS[2]]


def test_a_leading_slash_is_not_part_of_the_key(
    make: Callable[..., S3Destination], store: S3Store, bucket: str
) -> None:
    make("/{{ route }}/x.jsonl").deliver([RECORDS])
    assert store.keys(bucket) == ["orders/x.jsonl"]


def test_records_whose_key_cannot_be_made_are_refused(
    make: Callable[..., S3Destination], store: S3Store, bucket: str
) -> None:
    records = [{"id": 1, "p": "a"}, {"id": 2}, {"id": 3, "p": "x" * 1100}, {"id": 4, "p": ""}]
    result = make("{{ record.p }}").deliver([records])
    assert result.delivered == 1 and store.keys(bucket) == ["a"]
    reasons = {item.record["id"]: item.reason for item in result.rejections}
    assert "record.p" in reasons[2]
    assert "1024 bytes" in reasons[3]
    assert "names no object" in reasons[4]


def test_record_values_are_data_never_template_source(
    make: Callable[..., S3Destination], store: S3Store, bucket: str
) -> None:
    record = {"id": 1, "p": "{{ 7*7 }}", "note": "{% raw %}{{ 7*7 }}"}
    make("k/{{ record.p }}.jsonl").deliver([[record]])
    assert store.keys(bucket) == ["k/{{ 7*7 }}.jsonl"]
    assert _lines(store.read(bucket, "k/{{ 7*7 }}.jsonl")) == [record]


# --- Multipart, retries, rate limit --------------------------------------------------------------


def test_a_large_object_is_uploaded_in_parts(
    make: Callable[..., S3Destination], store: S3Store, bucket: str
) -> None:
    """Above the threshold boto3 uses a multipart upload: the ETag says how many parts."""
    records = [{"id": n, "pad": f"{n:08d}" * 12} for n in range(60_000)]  # ~7 MiB
    batches = [records[i : i + 10_000] for i in range(0, len(records), 10_000)]
    result = make(
        "big.jsonl", multipart_threshold=1024 * 1024, multipart_chunksize=5 * 1024**2
    ).deliver(batches)
    assert result.delivered == 60_000
    head = store.head(bucket, "big.jsonl")
    assert head["ContentLength"] > 6 * 1024 * 1024
    assert head["ETag"].strip('"').endswith("-2")  # two parts: 5 MiB and the rest
    assert [record["id"] for record in _lines(store.read(bucket, "big.jsonl"))] == list(
        range(60_000)
    )
    assert store.client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_a_small_object_is_one_put(
    make: Callable[..., S3Destination], store: S3Store, bucket: str
) -> None:
    make("small.jsonl").deliver([RECORDS])
    assert "-" not in store.head(bucket, "small.jsonl")["ETag"]


def test_a_retried_delivery_rewrites_the_same_object(
    make: Callable[..., S3Destination], store: S3Store, bucket: str
) -> None:
    target = make("o.jsonl.gz")
    target.deliver([RECORDS])
    first = store.head(bucket, "o.jsonl.gz")["ETag"]
    target.deliver([RECORDS])
    assert store.keys(bucket) == ["o.jsonl.gz"]
    assert store.head(bucket, "o.jsonl.gz")["ETag"] == first  # same bytes (no gzip mtime)
    assert _lines(gzip.decompress(store.read(bucket, "o.jsonl.gz"))) == RECORDS


def _client_error(status: int, code: str, retry_after: str | None = None) -> Exception:
    from botocore.exceptions import ClientError

    headers = {"retry-after": retry_after} if retry_after else {}
    return ClientError(
        {
            "Error": {"Code": code, "Message": f"{code} (injected)"},
            "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": headers},
        },
        "PutObject",
    )


def test_throttling_and_5xx_are_retried_honouring_retry_after(
    make: Callable[..., S3Destination],
    store: S3Store,
    bucket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    failures = [
        _client_error(503, "SlowDown", retry_after="7"),
        _client_error(500, "InternalError"),
    ]
    original = S3Hook.load_file_obj

    def flaky(self: Any, *args: Any, **kwargs: Any) -> Any:
        if failures:
            raise failures.pop(0)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(S3Hook, "load_file_obj", flaky)
    target = make("o.jsonl")
    sleeps: list[float] = []
    target.policy = RetryPolicy(max_attempts=3, sleep=sleeps.append)
    assert target.deliver([RECORDS]).delivered == 3
    assert sleeps[0] == 7.0 and len(sleeps) == 2
    assert _lines(store.read(bucket, "o.jsonl")) == RECORDS


def test_retriable_failures_give_up_after_max_attempts(
    make: Callable[..., S3Destination], monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    def failing(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise _client_error(503, "ServiceUnavailable")

    monkeypatch.setattr(S3Hook, "load_file_obj", failing)
    target = make("o.jsonl", max_attempts=2)
    target.policy.sleep = lambda seconds: None
    with pytest.raises(RetriableError, match="gave up after 2 attempts"):
        target.deliver([RECORDS])


def test_rate_limit_spaces_the_uploads(make: Callable[..., S3Destination]) -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    target = make("r/{{ batch }}.jsonl", rate_limit=2)
    target.limiter = RateLimiter(2, clock=lambda: now[0], sleep=sleep)
    target.deliver([[record] for record in RECORDS * 3])  # 9 objects at 2 per second
    assert now[0] == pytest.approx(3.5)  # the first two at once (burst), then one per 0.5 s


# --- Errors and secrets ---------------------------------------------------------------------------


def test_a_missing_bucket_names_route_destination_and_bucket(
    make: Callable[..., S3Destination],
) -> None:
    with pytest.raises(DestinationError) as caught:
        make("o.jsonl", bucket="no-such-bucket-here").deliver([RECORDS])
    message = str(caught.value)
    assert not isinstance(caught.value, RetriableError)
    assert "route 'orders'" in message and "destination 'lake'" in message
    assert "s3://no-such-bucket-here/o.jsonl" in message and "NoSuchBucket" in message
    assert "create it" in message
    assert SECRET_KEY not in message


def test_an_unreachable_endpoint_is_retriable_and_named(
    define_conn: Callable[..., str], make: Callable[..., S3Destination]
) -> None:
    from tests.support.moto_server import _free_port

    endpoint = f"http://127.0.0.1:{_free_port()}"
    conn_id = define_conn(connection_json(endpoint), "aws")
    target = make("o.jsonl", connection=conn_id, bucket="some-bucket", max_attempts=2)
    target.policy.sleep = lambda seconds: None
    with pytest.raises(RetriableError) as caught:
        target.deliver([RECORDS])
    message = str(caught.value)
    assert "route 'orders'" in message and "destination 'lake'" in message
    assert "s3://some-bucket/o.jsonl" in message and endpoint in message
    assert "gave up after 2 attempts" in message
    assert SECRET_KEY not in message


def test_an_undefined_connection_is_named(make: Callable[..., S3Destination]) -> None:
    with pytest.raises(DestinationError, match="connection 'nope_aws'"):
        make("o.jsonl", connection="nope_aws").deliver([RECORDS])


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def debug_lines() -> Iterator[list[str]]:
    """Every message botocore and this package log, at DEBUG, unmasked."""
    handler = _Lines()
    loggers = [logging.getLogger(name) for name in ("botocore", "airflow_dataflow")]
    saved = [(logger.level, logger.disabled) for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
        logger.disabled = False
        logger.addHandler(handler)
    yield handler.lines
    for logger, (level, disabled) in zip(loggers, saved, strict=True):
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.disabled = disabled


def test_credentials_are_masked_in_logs(
    make: Callable[..., S3Destination],
    define_conn: Callable[..., str],
    moto: str,
    debug_lines: list[str],
) -> None:
    """Airflow's masker (which task log handlers apply) hides the secret key and the session
    token (from the connection's extra), even in botocore's debug lines that carry them."""
    from airflow.sdk.log import _secrets_masker

    token = "dataflow-session-token-5d1e8a"
    conn_id = define_conn(connection_json(moto, aws_session_token=token), "aws")
    make("o.jsonl", connection=conn_id).deliver([RECORDS])
    masker = _secrets_masker()
    assert masker.redact(f"key={SECRET_KEY} token={token}") == "key=*** token=***"
    assert any(token in line for line in debug_lines)  # botocore's debug lines do carry it
    masked = "\n".join(str(masker.redact(line)) for line in debug_lines)
    assert SECRET_KEY not in masked and token not in masked
    assert "x-amz-security-token:***" in masked


def test_unknown_settings_are_rejected() -> None:
    from airflow_dataflow.config import load_route_text
    from airflow_dataflow.errors import RouteConfigError

    with pytest.raises(RouteConfigError, match="bukket"):
        load_route_text(
            """
source: {type: file, path: in.jsonl}
destinations:
  lake: {type: s3, connection: aws_default, bukket: b, key: x.jsonl}
""",
            "r.route.yaml",
        )


# --- Through the delivery ledger ------------------------------------------------------------------


ORDERS = [{"id": n, "country": ["DE", "FR", "IT"][n % 3]} for n in range(1000)]


def _ids(store: S3Store, bucket: str) -> list[int]:
    return sorted(
        record["id"] for key in store.keys(bucket) for record in _lines(store.read(bucket, key))
    )


@pytest.mark.usefixtures("own_state_store")
@pytest.mark.parametrize(
    ("key", "after", "objects"),
    [
        ("{{ ds }}/part-{{ batch }}.jsonl", 4, 10),
        ("country={{ record.country }}/{{ ds }}.jsonl", 2, 3),
        ("all/{{ ds }}.jsonl", 1, 1),
    ],
    ids=["batch", "partitioned", "one-object"],
)
def test_killed_mid_delivery_the_retry_delivers_each_record_once(
    tmp_path: Path, conn_id: str, bucket: str, store: S3Store, key: str, after: int, objects: int
) -> None:
    from airflow_dataflow.pipeline.deliver import deliver

    destination = (
        f'{{type: s3, connection: {conn_id}, bucket: {bucket}, key: "{key}", batch_size: 100}}'
    )
    route, context, partition = stage_partition(
        tmp_path, destination, "run-1", ORDERS, ds="2024-01-02"
    )
    deliver_and_get_killed(
        route, context, partition, target="s3:S3Destination._upload", after=after
    )
    before = store.keys(bucket)
    assert len(before) == after  # uploaded, then killed before the ledger heard of it
    outcome = deliver(route, "out", context, partition)  # the task's retry
    assert outcome["delivered"] == 1000
    assert len(store.keys(bucket)) == objects
    assert _ids(store, bucket) == list(range(1000))  # each record exactly once across objects


@pytest.mark.usefixtures("own_state_store")
def test_batch_objects_are_ledger_batches_a_retry_skips_uploaded_ones(
    tmp_path: Path,
    conn_id: str,
    bucket: str,
    store: S3Store,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow_dataflow.pipeline.deliver import deliver

    key = "{{ ds }}/part-{{ batch }}.jsonl"
    destination = (
        f'{{type: s3, connection: {conn_id}, bucket: {bucket}, key: "{key}", batch_size: 100, '
        f"max_attempts: 1}}"
    )
    route, context, partition = stage_partition(
        tmp_path, destination, "run-1", ORDERS, ds="2024-01-02"
    )
    with monkeypatch.context() as patch:
        injected = RetriableError("injected: connection reset")
        fail_on_call(patch, s3_destination.S3Destination, "_upload", 5, injected)
        with pytest.raises(RetriableError):
            deliver(route, "out", context, partition)
    assert len(store.keys(bucket)) == 4
    outcome = deliver(route, "out", context, partition)
    assert (outcome["delivered"], outcome["batches"], outcome["skipped"]) == (1000, 10, 4)
    assert store.keys(bucket) == sorted(f"2024-01-02/part-{n}.jsonl" for n in range(10))
    assert _ids(store, bucket) == list(range(1000))


@pytest.mark.usefixtures("own_state_store")
def test_refused_records_are_dead_letters_and_counted(
    tmp_path: Path, conn_id: str, bucket: str, store: S3Store
) -> None:
    from airflow_dataflow.pipeline.deliver import deliver
    from airflow_dataflow.state.store import StateStore

    key = "{{ record.region }}/{{ batch }}.jsonl"  # only some records have a region
    destination = f'{{type: s3, connection: {conn_id}, bucket: {bucket}, key: "{key}"}}'
    records = [{"id": 1, "region": "eu"}, {"id": 2}, {"id": 3, "region": "us"}]
    route, context, partition = stage_partition(
        tmp_path, destination, "run-1", records, chunk_size=None
    )
    outcome = deliver(route, "out", context, partition)
    assert (outcome["delivered"], outcome["rejected"]) == (2, 1)
    assert store.keys(bucket) == ["eu/0.jsonl", "us/0.jsonl"]
    (letter,) = StateStore.open().dead_letters("orders")
    assert letter["record"] == {"id": 2} and "record.region" in letter["reason"]
