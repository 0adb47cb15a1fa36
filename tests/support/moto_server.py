"""moto's standalone server: a real S3 HTTP endpoint on loopback, started as a subprocess.

``moto_endpoint()`` starts ``moto_server`` (from ``moto[server]``) on a free port and yields its
URL; test modules wrap it in a fixture. When the binary is absent the tests skip, except under
``CI=true`` where they fail. Each test gets its own bucket (``S3Store.new_bucket``).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.databases import _server_unavailable

ACCESS_KEY = "AKIADATAFLOWTEST0001"
SECRET_KEY = "dataflow-test-secret-9f4c2b7e1a"
REGION = "us-east-1"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _binary() -> str | None:
    beside = Path(sys.executable).with_name("moto_server")
    return str(beside) if beside.exists() else shutil.which("moto_server")


def _wait_until_up(url: str, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto_server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/moto-api/", timeout=1):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    raise RuntimeError(f"moto_server did not answer at {url} within {timeout}s")


def moto_endpoint() -> Iterator[str]:
    """Start ``moto_server`` on a free loopback port; yields its URL, stops it afterwards."""
    binary = _binary()
    if binary is None:
        _server_unavailable("moto_server not found (pip install 'moto[server]')")
        return
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [binary, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_until_up(url, process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def connection_json(endpoint: str, **extra: Any) -> str:
    """An Airflow ``aws`` connection (as ``AIRFLOW_CONN_*`` JSON) for the moto endpoint."""
    return json.dumps(
        {
            "conn_type": "aws",
            "login": ACCESS_KEY,
            "password": SECRET_KEY,
            "extra": {"endpoint_url": endpoint, "region_name": REGION, **extra},
        }
    )


@dataclass
class S3Store:
    """A boto3 client on the moto server, to create buckets and read objects back."""

    endpoint: str

    @property
    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )

    def new_bucket(self, prefix: str = "dataflow") -> str:
        bucket = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.client.create_bucket(Bucket=bucket)
        return bucket

    def keys(self, bucket: str) -> list[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        return sorted(
            item["Key"]
            for page in paginator.paginate(Bucket=bucket)
            for item in page.get("Contents", [])
        )

    def read(self, bucket: str, key: str) -> bytes:
        return bytes(self.client.get_object(Bucket=bucket, Key=key)["Body"].read())

    def head(self, bucket: str, key: str) -> dict[str, Any]:
        return dict(self.client.head_object(Bucket=bucket, Key=key))


DefineConn = Callable[[str, str], str]
