"""The benchmarks still run (tiny sizes): parse time, routing throughput, ledger overhead."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_parse_benchmark_runs_and_writes_its_table(tmp_path: Path) -> None:
    out = tmp_path / "README.md"
    out.write_text("# Bench\n\n<!-- results:start -->\nSTALE\n<!-- results:end -->\n\nTail.\n")
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "parse.py"), "--sizes", "1,2", "--repeat", "1"]
        + ["--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "| 1 |" in done.stdout and "| 2 |" in done.stdout
    assert "DAG id from a `route:` key" in done.stdout
    text = out.read_text()
    assert "STALE" not in text and "| 2 |" in text and text.endswith("Tail.\n")


def test_routing_benchmark_runs_and_agrees_with_the_naive_baseline() -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "routing.py"),
            "--records",
            "3000",
            "--naive-records",
            "500",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "(b) `route_records`" in done.stdout
    assert "naive baseline agrees with the router" in done.stdout


@pytest.mark.integration
def test_ledger_benchmark_runs_and_writes_its_table(postgres_uri: str, tmp_path: Path) -> None:
    out = tmp_path / "README.md"
    out.write_text(
        "# Bench\n\n<!-- ledger-results:start -->\nSTALE\n<!-- ledger-results:end -->\n\nTail.\n"
    )
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "ledger.py"), "--records", "3000", "--repeat", "1"]
        + ["--postgres-uri", postgres_uri, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "| baseline: `_TableBatchSender`" in done.stdout
    assert "PostgreSQL state store" in done.stdout and "Target (overhead under 5%" in done.stdout
    text = out.read_text()
    assert "STALE" not in text and "records/s" in text and text.endswith("Tail.\n")


@pytest.mark.integration
def test_destinations_benchmark_runs_and_writes_its_table(
    postgres_uri: str, tmp_path: Path
) -> None:
    out = tmp_path / "README.md"
    out.write_text(
        "# Bench\n\n<!-- destinations-results:start -->\nSTALE\n"
        "<!-- destinations-results:end -->\n\nTail.\n"
    )
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "destinations.py"), "--records", "3000"]
        + ["--variants", "insert,upsert,mirror", "--postgres-uri", postgres_uri, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "| `deliver`, insert, COPY |" in done.stdout
    assert "`format: parquet`" in done.stdout and "`format: jsonl`" in done.stdout
    text = out.read_text()
    assert "STALE" not in text and "share of COPY's rate" in text and text.endswith("Tail.\n")


def test_hubspot_benchmark_reads_every_deal_without_429s() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "hubspot.py"), "--deals", "600"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith(("| full", "| incr"))]
    assert len(rows) == 2
    assert all(row.split("|")[9].strip() == "0" for row in rows)  # the 429s column
