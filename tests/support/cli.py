"""Run the real ``airflow-dataflow`` command in a subprocess, as users do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

COMMAND = str(Path(sys.executable).with_name("airflow-dataflow"))


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def summary(self) -> dict[str, Any]:
        """The last stdout line of ``run --json``: one JSON object."""
        lines = [line for line in self.stdout.splitlines() if line.strip()]
        assert lines, f"no output; stderr:\n{self.stderr[-3000:]}"
        return json.loads(lines[-1])

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> CliResult:
    completed = subprocess.run(
        [COMMAND, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        check=False,
    )
    return CliResult(completed.returncode, completed.stdout, completed.stderr)


def assert_conserved(summary: dict[str, Any]) -> None:
    """Every record accounted for, the one check every end-to-end test shares.

    read = matched + unmatched + dead-lettered, and for each destination the records routed
    to it = delivered + held back by ``min_records``.
    """
    counts = summary["counts"]
    accounted = counts["matched"] + counts["unmatched"] + counts["dead_lettered"]
    assert counts["read"] == accounted, counts
    for name, routed in counts["routed"].items():
        delivered = counts["destinations"][name]
        refused = counts.get("rejected", {}).get(name, 0)
        assert routed == delivered + counts["held_back"].get(name, 0) + refused, (name, counts)


def run_route(dataflow: Callable[..., CliResult], route: Path, *args: str) -> dict[str, Any]:
    """``airflow-dataflow run ROUTE --json``: it must succeed, every record accounted for."""
    result = dataflow("run", str(route), "--json", *args)
    summary = result.summary
    assert summary["state"] == "success", result.output[-5000:]
    assert result.returncode == 0
    assert_conserved(summary)
    return summary
