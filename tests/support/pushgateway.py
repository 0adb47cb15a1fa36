"""A real Pushgateway (Debian's ``prometheus-pushgateway``) on a free loopback port.

Started with ``--persistence.file=`` empty, so no series survive between tests. When the binary
is absent the tests that use it skip (``apt-get install prometheus-pushgateway``), except
under ``CI=true`` where they fail. ``DATAFLOW_TEST_PUSHGATEWAY`` names another binary.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.support.databases import _server_unavailable

BINARY = os.environ.get("DATAFLOW_TEST_PUSHGATEWAY", "prometheus-pushgateway")
#: Series the Pushgateway adds to each group by itself.
GATEWAY_SERIES = frozenset({"push_time_seconds", "push_failure_time_seconds"})


@dataclass
class Pushgateway:
    """A running Pushgateway: its URL, and what its ``/metrics`` exposes per group."""

    url: str
    process: subprocess.Popen[bytes]

    def scrape(self) -> str:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=10) as response:
            return response.read().decode("utf-8")

    def series(self, job: str, route: str | None = None) -> dict[str, float]:
        """The group's series as ``{'name{label="value",...}': value}``.

        The grouping labels (``job``, ``route``, ``instance``) and the gateway's own
        ``push_*`` series are left out; a series exposed twice fails the test.
        """
        from prometheus_client.parser import text_string_to_metric_families

        found: dict[str, float] = {}
        for family in text_string_to_metric_families(self.scrape()):
            for sample in family.samples:
                labels = dict(sample.labels)
                if labels.get("job") != job or (route is not None and labels.get("route") != route):
                    continue
                if sample.name in GATEWAY_SERIES:
                    continue
                key = _series_key(sample.name, labels)
                assert key not in found, f"{key} exposed twice"
                found[key] = sample.value
        return found

    def groups(self) -> set[tuple[str, str]]:
        """The (job, route) of every group pushed so far."""
        from prometheus_client.parser import text_string_to_metric_families

        return {
            (sample.labels["job"], sample.labels.get("route", ""))
            for family in text_string_to_metric_families(self.scrape())
            if family.name == "push_time_seconds"
            for sample in family.samples
        }


def _series_key(name: str, labels: dict[str, str]) -> str:
    kept = sorted((k, v) for k, v in labels.items() if k not in ("job", "route", "instance"))
    if not kept:
        return name
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in kept) + "}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as response:
                if response.status == 200:
                    return True
        except OSError:
            time.sleep(0.05)
    return False


def _start(binary: str) -> Pushgateway:
    """Start on a free port; retried when another process took the port first."""
    errors = ""
    for _ in range(3):
        port = _free_port()
        process = subprocess.Popen(
            [
                binary,
                f"--web.listen-address=127.0.0.1:{port}",
                "--persistence.file=",
                "--log.level=warn",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        url = f"http://127.0.0.1:{port}"
        if _wait_ready(url, process):
            return Pushgateway(url, process)
        _stop(process)
        errors = process.stderr.read().decode(errors="replace") if process.stderr else ""
    raise RuntimeError(f"{binary} did not start: {errors[-2000:]}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(name="pushgateway")
def pushgateway_fixture() -> Iterator[Pushgateway]:
    """A fresh, empty Pushgateway for one test (import this into a test module to use it)."""
    binary = shutil.which(BINARY)
    if binary is None:
        _server_unavailable(
            f"{BINARY} is not installed (Debian: apt-get install -y prometheus-pushgateway)"
        )
    assert binary is not None
    gateway = _start(binary)
    try:
        yield gateway
    finally:
        _stop(gateway.process)
        if gateway.process.stderr:
            gateway.process.stderr.close()
