"""Faults for delivery tests: a destination failing on its Nth call, a process killed mid-delivery.

``own_state_store`` (a fixture, registered in ``tests/conftest.py``) gives a test its own default
state store, so the ledger of one test never sees another's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def own_state_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """This test's own default state store (``$AIRFLOW_HOME/dataflow/state.db``)."""
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    monkeypatch.delenv("AIRFLOW_CONN_DATAFLOW_STATE", raising=False)


def fail_on_call(
    monkeypatch: pytest.MonkeyPatch,
    cls: type,
    method: str,
    failing_call: int,
    error: Exception | None = None,
) -> list[int]:
    """Make ``cls.method`` raise ``error`` on its ``failing_call``-th call (1-based).

    The default error is a :class:`DestinationError`; returns the log of calls.
    """
    from airflow_dataflow.errors import DestinationError

    original = getattr(cls, method)
    raised = error or DestinationError("injected failure: the destination went away")
    calls: list[int] = []

    def failing(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(len(calls) + 1)
        if len(calls) == failing_call:
            raise raised
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, method, failing)
    return calls


_KILLER = """
import importlib, json, os, signal, sys
from airflow_dataflow.config import load_route
from airflow_dataflow.context import RunContext
from airflow_dataflow.pipeline.deliver import deliver

module, attribute, after, when = json.loads(sys.argv[1])
target = importlib.import_module(module)
*path, method = attribute.split(".")
for name in path:
    target = getattr(target, name)
original = getattr(target, method)
calls = []

def killing(self, *args, **kwargs):
    calls.append(1)
    if len(calls) == after and when == "before":
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no except, no finally
    result = original(self, *args, **kwargs)
    if len(calls) == after:
        os.kill(os.getpid(), signal.SIGKILL)
    return result

setattr(target, method, killing)
route = load_route(sys.argv[2])
context = RunContext(**json.loads(sys.argv[3]))
deliver(route, "out", context, json.loads(sys.argv[4]))
"""


def deliver_and_get_killed(
    route: Any,
    context: Any,
    partition: dict[str, Any],
    *,
    target: str,
    after: int,
    when: str = "after",
    timeout: float = 180,
) -> None:
    """Deliver ``partition`` to ``out`` in a subprocess that SIGKILLs itself mid-delivery.

    ``target`` is ``"module:Class.method"`` (a module name without dots is one of
    ``airflow_dataflow.destinations``); the process is killed on the ``after``-th call of that
    method, ``"after"`` it returned (the default) or ``"before"`` it runs.
    """
    assert when in ("before", "after"), when
    module, _, attribute = target.partition(":")
    if "." not in module:
        module = f"airflow_dataflow.destinations.{module}"
    run = {
        "route": context.route,
        "run_id": context.run_id,
        "ds": context.ds,
        "params": dict(context.params),
        "route_file": context.route_file,
    }
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            _KILLER,
            json.dumps([module, attribute, after, when]),
            route.file,
            json.dumps(run),
            json.dumps(partition),
        ],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert completed.returncode == -9, completed.stderr[-3000:]


def record_waits(
    monkeypatch: pytest.MonkeyPatch, cls: type, seed: int | None = None
) -> list[float]:
    """Make ``cls.retry_policy`` wait on a fake clock; returns the waits it asked for.

    ``seed`` fixes the backoff's jitter (``random.Random(seed)``).
    """
    import random

    from airflow_dataflow.destinations.policy import RetryPolicy

    waits: list[float] = []

    def policy(self: Any) -> RetryPolicy:
        jitter = {} if seed is None else {"rng": random.Random(seed)}
        return RetryPolicy(max_attempts=self.settings.max_attempts, sleep=waits.append, **jitter)

    monkeypatch.setattr(cls, "retry_policy", policy)
    return waits


def record_message_waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Message destinations (email, slack) retry on a fake clock; returns the waits."""
    from airflow_dataflow.destinations import messages
    from airflow_dataflow.destinations.policy import RetryPolicy

    waits: list[float] = []
    monkeypatch.setattr(messages, "retry_policy", lambda: RetryPolicy(sleep=waits.append))
    return waits
