"""The parse-time benchmark still runs (1 and 2 routes, one cold process per cell)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
