"""Every example in the docs runs: routes validate, conditions and transforms do what they say."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from airflow_dataflow.config import load_route_text
from airflow_dataflow.errors import RouteConfigError
from airflow_dataflow.routing import compile_condition, compile_transforms

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
_BLOCK = re.compile(r"^```yaml\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _blocks() -> list[Any]:
    found = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for match in _BLOCK.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            found.append(pytest.param(match.group(1), id=f"{doc.relative_to(ROOT)}:{line}"))
    return found


BLOCKS = _blocks()


def test_docs_have_examples() -> None:
    assert len(BLOCKS) >= 10


@pytest.mark.parametrize("block", BLOCKS)
def test_doc_example(block: str) -> None:
    first_line = block.splitlines()[0]
    if first_line.startswith("# condition"):
        _check_condition(yaml.safe_load(block))
    elif first_line.startswith("# transform"):
        _check_transform(yaml.safe_load(block))
    elif first_line.startswith("# invalid:"):
        expected = first_line.removeprefix("# invalid:").strip()
        with pytest.raises(RouteConfigError) as caught:
            load_route_text(block, "example.route.yaml")
        assert expected in str(caught.value)
    elif re.search(r"^source:", block, re.MULTILINE):
        load_route_text(block, "example.route.yaml")
    else:
        yaml.safe_load(block)  # a fragment: at least valid YAML


def _check_condition(example: dict[str, Any]) -> None:
    variables = {"params": example.get("params", {})}
    condition = compile_condition(example["when"], variables=variables)
    for record in example["matches"]:
        assert condition(record), f"should match: {record}"
    for record in example["rejects"]:
        assert not condition(record), f"should reject: {record}"


def _check_transform(example: dict[str, Any]) -> None:
    transform = compile_transforms(example["transform"], variables={"params": {}})
    assert transform(example["input"]) == example["output"]
