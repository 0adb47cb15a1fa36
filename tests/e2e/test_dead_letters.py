"""Dead letters through the real command line: a run dead-letters records, they are listed,
the route is fixed, ``dead-letters replay`` delivers them once."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.cli import CliResult
from tests.support.routes import read_jsonl, write_jsonl, write_route

ROUTE = """
    source: {type: file, path: data/orders.jsonl}
    rules:
      - name: big
        when: {path: $.amount, exists: true}
        transform:
          - select: {id: $.id, amount: $.amount}
          - cast: {amount: int}
        to: [big]
    destinations:
      big: {type: file, path: "out/{{ run_id }}.jsonl"}
"""


def _json_lines(result: CliResult) -> list[dict[str, Any]]:
    assert result.returncode == 0, result.output[-3000:]
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def _one_json(result: CliResult) -> dict[str, Any]:
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, result.output[-3000:]
    return json.loads(lines[0])


def test_dead_letters_are_listed_and_replayed_once_the_route_is_fixed(
    dataflow: Callable[..., CliResult], tmp_path: Path
) -> None:
    name = f"dead_{uuid.uuid4().hex[:8]}"  # the state store is shared by the session
    records = [{"id": 1, "amount": "12"}, {"id": 2, "amount": "abc"}, {"id": 3, "amount": "n/a"}]
    write_jsonl(tmp_path / "data" / "orders.jsonl", records)
    route = write_route(tmp_path, name, ROUTE)
    run = dataflow("run", str(route), "--json")
    assert run.returncode == 0, run.output[-5000:]
    assert run.summary["counts"]["dead_lettered"] == 2

    letters = _json_lines(dataflow("dead-letters", "list", name, "--json"))
    assert [letter["record"] for letter in letters] == [
        {"id": 2, "amount": "abc"},
        {"id": 3, "amount": "n/a"},
    ]
    assert {letter["run_id"] for letter in letters} == {run.summary["run_id"]}
    assert all("cast amount to int" in letter["reason"] for letter in letters)
    assert _json_lines(dataflow("dead-letters", "list", name, "--since", "1h", "--json")) == letters
    assert (
        _json_lines(dataflow("dead-letters", "list", name, "--since", "2999-01-01", "--json")) == []
    )
    human = dataflow("dead-letters", "list", name)
    assert human.returncode == 0
    assert [line.split()[0] for line in human.stdout.splitlines()] == [
        str(letter["id"]) for letter in letters
    ]
    assert "2 pending dead letter(s)" in human.stderr
    shown = _one_json(dataflow("dead-letters", "show", name, str(letters[0]["id"]), "--json"))
    assert shown == letters[0]

    still_broken = dataflow("dead-letters", "replay", name)
    assert still_broken.returncode == 1
    assert "0 replayed, 2 stayed" in still_broken.stdout
    assert "cast amount to int" in still_broken.stdout

    route.write_text(route.read_text().replace("cast: {amount: int}", "cast: {amount: str}"))
    replayed = dataflow("dead-letters", "replay", str(route), "--json")
    assert replayed.returncode == 0, replayed.output[-3000:]
    report = _one_json(replayed)
    assert (report["replayed"], report["stayed"]) == (2, 0)
    assert report["run_id"].startswith("replay__")
    (location,) = report["destinations"]["big"]["locations"]
    assert read_jsonl(Path(location)) == [{"id": 2, "amount": "abc"}, {"id": 3, "amount": "n/a"}]

    assert _json_lines(dataflow("dead-letters", "list", name, "--json")) == []
    everything = _json_lines(dataflow("dead-letters", "list", name, "--all", "--json"))
    assert {letter["replay_run_id"] for letter in everything} == {report["run_id"]}

    outputs = sorted((tmp_path / "out").iterdir())
    again = dataflow("dead-letters", "replay", name, "--json")
    assert again.returncode == 0, again.output[-3000:]
    assert _one_json(again)["entries"] == []
    assert sorted((tmp_path / "out").iterdir()) == outputs  # nothing delivered

    by_id = dataflow("dead-letters", "replay", name, "--id", str(letters[0]["id"]))
    assert by_id.returncode == 0 and "already replayed" in by_id.stdout
    unknown = dataflow("dead-letters", "show", name, "999999999")
    assert unknown.returncode == 1
    assert f"route '{name}' has no dead letter with id 999999999" in unknown.stderr
