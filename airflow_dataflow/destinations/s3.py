"""The ``s3`` destination: records as objects in an S3 bucket (or any S3-compatible store).

Built on the Amazon provider's ``S3Hook`` (an ``aws`` connection; ``endpoint_url`` in its
extra for MinIO, moto, Ceph, ...). Names and formats work as the ``file`` destination's: one
object per rendered key, one per batch with ``{{ batch }}`` in the key. Each object is written
to a local temporary file, then uploaded in one request, or as a multipart upload above
``multipart_threshold``; either way S3 shows the object only once it is complete, and a retry
rewrites it whole.
"""

from __future__ import annotations

import logging
import os
import tempfile
from functools import cached_property
from typing import IO, Any, Literal

from pydantic import Field

from airflow_dataflow.destinations.base import DestinationSettings
from airflow_dataflow.destinations.file import Batches, LaidOutDestination
from airflow_dataflow.destinations.formats import (
    Compression,
    Counter,
    FileFormat,
    RecordsDoNotFit,
    compression_from_name,
    format_from_name,
    write_records,
)
from airflow_dataflow.destinations.policy import RetryPolicy, is_retriable_status, parse_retry_after
from airflow_dataflow.errors import DestinationError, RetriableError
from airflow_dataflow.templating import TemplateText

log = logging.getLogger(__name__)

MIB = 1024 * 1024
MAX_KEY_BYTES = 1024
_SECRET_EXTRAS = ("aws_secret_access_key", "aws_session_token", "session_token")
_RETRIABLE_CODES = frozenset(
    {"SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "Throttling"}
)
_CREDENTIAL_CODES = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"}
)


class S3DestinationSettings(DestinationSettings):
    type: Literal["s3"]  # type: ignore[assignment]
    connection: str = Field(
        default="aws_default",
        description="Airflow connection of type aws (extra endpoint_url for S3-compatible stores)",
    )
    bucket: str = Field(min_length=3, max_length=63, description="The bucket's name")
    key: TemplateText = Field(
        description="Object key; a Jinja template over route, destination, run_id, ds, params, "
        "record (one object per rendered key) and batch (one object per batch)"
    )
    format: FileFormat | None = Field(
        default=None, description="Default: from the key's extension, else jsonl"
    )
    compression: Compression | None = Field(
        default=None,
        description="Default: from the extension (.gz: gzip, .zst: zstd), else none; "
        "for parquet the codec inside the file (default snappy)",
    )
    batch_size: int = Field(
        default=1000, ge=1, description="Records per batch: per object with {{ batch }} in the key"
    )
    multipart_threshold: int = Field(
        default=8 * MIB, ge=1, description="Objects of at least this many bytes go in parts"
    )
    multipart_chunksize: int = Field(
        default=8 * MIB, ge=5 * MIB, description="Bytes per part of a multipart upload"
    )
    max_attempts: int = Field(
        default=5, ge=1, description="Upload attempts per object, counting the first"
    )


class S3Destination(LaidOutDestination):
    """Uploads records as objects at a templated key; a retry rewrites the same objects."""

    settings_model = S3DestinationSettings
    settings: S3DestinationSettings
    what = "key"

    def _template_source(self) -> str:
        return self.settings.key

    @property
    def prefix(self) -> str:
        return f"s3://{self.settings.bucket}/"

    def _location(self, rendered: str) -> str:
        return self.prefix + rendered.lstrip("/")

    def _refusal(self, location: str) -> str | None:
        key = location.removeprefix(self.prefix)
        if not key or key.endswith("/"):
            return f"key {key!r} names no object (empty, or ends with '/')"
        if len(key.encode("utf-8")) > MAX_KEY_BYTES:
            return f"key {key[:80]!r}... is longer than S3's {MAX_KEY_BYTES} bytes"
        return None

    @cached_property
    def policy(self) -> RetryPolicy:
        return RetryPolicy(max_attempts=self.settings.max_attempts)

    @cached_property
    def hook(self) -> Any:
        """The provider's S3Hook: our transfer settings; botocore retries off (``policy``
        retries whole uploads, the one retry policy)."""
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook
        from botocore.config import Config

        connection = self._connection()
        options = dict(connection.extra_dejson.get("config_kwargs") or {})
        if options.get("signature_version") == "unsigned":
            from botocore import UNSIGNED

            options["signature_version"] = UNSIGNED
        options["retries"] = {"total_max_attempts": 1}
        options.setdefault("connect_timeout", 10)
        options.setdefault("read_timeout", 60)
        return S3Hook(
            aws_conn_id=self.settings.connection,
            transfer_config_args={
                "multipart_threshold": self.settings.multipart_threshold,
                "multipart_chunksize": self.settings.multipart_chunksize,
            },
            config=Config(**options),
        )

    def _connection(self) -> Any:
        """The aws connection, its secrets masked in every log line from now on."""
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook
        from airflow.sdk.log import mask_secret

        try:
            connection = S3Hook.get_connection(self.settings.connection)
        except Exception as exc:  # AirflowNotFoundException and backend errors
            raise DestinationError(
                f"route {self.context.route!r}: destination {self.name!r}: connection "
                f"{self.settings.connection!r} (type aws) is not defined: {exc}"
            ) from exc
        if connection.password:
            mask_secret(connection.password)
        extra = connection.extra_dejson
        for name in _SECRET_EXTRAS:
            if extra.get(name):
                mask_secret(extra[name], name)
        return connection

    def _write(self, location: str, batches: Batches) -> int:
        key = location.removeprefix(self.prefix)
        file_format = self.settings.format or format_from_name(key)
        compression = self.settings.compression
        if compression is None and file_format != "parquet":
            compression = compression_from_name(key)
        counter = Counter()
        with tempfile.TemporaryFile(prefix="dataflow-s3-") as body:
            try:
                write_records(body, batches, file_format, compression, counter)
            except RecordsDoNotFit as exc:
                raise DestinationError(
                    f"route {self.context.route!r}: destination {self.name!r}: records do not "
                    f"fit one Parquet schema in {location}: {exc}"
                ) from exc
            size = body.tell()
            self.policy.call(lambda: self._upload(body, key), what=f"the upload of {location}")
        log.info("uploaded %d records (%d bytes) to %s", counter.count, size, location)
        return counter.count

    def _upload(self, body: IO[bytes], key: str) -> None:
        """One attempt at putting ``body`` at ``key`` (whole, or in parts).

        Each attempt reads its own handle on the file: a failed transfer closes the one it had.
        """
        body.flush()
        with os.fdopen(os.dup(body.fileno()), "rb") as attempt:
            attempt.seek(0)
            try:
                self.hook.load_file_obj(
                    attempt, key=key, bucket_name=self.settings.bucket, replace=True
                )
            except Exception as exc:
                raise self._error(exc, key) from exc

    def _error(self, exc: Exception, key: str) -> Exception:
        """A failed upload as RetriableError (connect errors, timeouts, 408, 429, 5xx) or
        DestinationError naming the route, the destination, the bucket and the remedy."""
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import (
            ClientError,
            HTTPClientError,
            NoCredentialsError,
            PartialCredentialsError,
        )
        from botocore.exceptions import ConnectionError as BotoConnectionError

        where = (
            f"route {self.context.route!r}: destination {self.name!r}: cannot write "
            f"s3://{self.settings.bucket}/{key}"
        )
        cause = exc.__cause__ or exc.__context__
        if isinstance(exc, S3UploadFailedError) and isinstance(cause, Exception):
            exc = cause
        if isinstance(exc, ClientError):
            return self._client_error(exc, where)
        if isinstance(exc, BotoConnectionError | HTTPClientError):
            return RetriableError(
                f"{where}: cannot reach the S3 endpoint {self._endpoint()}: {exc}"
            )
        if isinstance(exc, NoCredentialsError | PartialCredentialsError):
            return DestinationError(
                f"{where}: {exc}; give connection {self.settings.connection!r} a login (access "
                f"key id) and password (secret access key), or a role the worker can assume"
            )
        if isinstance(exc, S3UploadFailedError):  # no cause kept: its text says what S3 said
            return DestinationError(f"{where}: {exc}")
        return exc

    def _client_error(self, exc: Any, where: str) -> Exception:
        error = exc.response.get("Error", {})
        metadata = exc.response.get("ResponseMetadata", {})
        code = str(error.get("Code", ""))
        status = int(metadata.get("HTTPStatusCode") or 0)
        said = f"{where}: S3 answered {status or ''} {code}: {error.get('Message', '')}".rstrip()
        if is_retriable_status(status) or code in _RETRIABLE_CODES:
            headers = metadata.get("HTTPHeaders", {})
            return RetriableError(said, retry_after=parse_retry_after(headers.get("retry-after")))
        return DestinationError(f"{said}. {self._remedy(code)}")

    def _remedy(self, code: str) -> str:
        bucket, connection = self.settings.bucket, self.settings.connection
        if code == "NoSuchBucket":
            return (
                f"Bucket {bucket!r} does not exist at {self._endpoint()}: create it, or fix "
                f"`bucket` (or the endpoint_url of connection {connection!r})"
            )
        if code in _CREDENTIAL_CODES:
            return f"The credentials of connection {connection!r} are refused: fix them"
        if code in ("AccessDenied", "AllAccessDisabled"):
            return (
                f"The credentials of connection {connection!r} may not write to bucket "
                f"{bucket!r}: grant s3:PutObject (and multipart upload) on it"
            )
        return "Fix the destination's settings or the bucket, then retry the task"

    def _endpoint(self) -> str:
        try:
            return str(self.hook.get_conn().meta.endpoint_url)
        except Exception:  # the client itself cannot be built
            return "(unknown endpoint)"
