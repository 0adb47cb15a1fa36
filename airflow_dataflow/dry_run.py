"""``test-route``: the rules applied to sample records, nothing delivered."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from airflow_dataflow.config import LoadedRoute
from airflow_dataflow.context import RunContext
from airflow_dataflow.pipeline.route import compile_route, rules_as_data
from airflow_dataflow.routing.explain import Explainer


def dry_run(
    route: LoadedRoute,
    lines: Iterable[str],
    *,
    conf: dict[str, Any] | None = None,
    explain: bool = False,
) -> Iterator[dict[str, Any]]:
    """One result per input line: matched rules, destinations and the transformed output.

    With `explain`, each result also has `"explain"`: per rule in priority order, whether it
    matched, the leaf condition that decided it (with the values its path selected), every leaf
    evaluated, and the rule's transformed output (see `routing.explain`).
    """
    params = {**route.config.param_defaults(), **(conf or {})}
    context = RunContext(
        route=route.route_id, run_id="test-route", params=params, route_file=route.file
    )
    router = compile_route(route, context)
    explainer = (
        Explainer(
            rules_as_data(route),
            mode=route.config.mode,
            unmatched=route.config.unmatched,
            variables=context.template_vars(),
        )
        if explain
        else None
    )
    index = 0
    for line_number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        result: dict[str, Any] = {"index": index, "line": line_number}
        index += 1
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            result.update(rules=[], destinations=[], status="dead", error=f"invalid JSON: {exc}")
            yield result
            continue
        routed = router.route(record)
        destinations = list(dict.fromkeys(name for name, _ in routed.deliveries))
        outputs: dict[str, list[Any]] = {}
        for name, output in routed.deliveries:
            outputs.setdefault(name, []).append(output)
        result.update(
            rules=routed.rules, destinations=destinations, status=routed.status, outputs=outputs
        )
        if routed.dead:
            result["dead_letters"] = [
                {"rule": letter.rule, "step": letter.step, "error": letter.error}
                for letter in routed.dead
            ]
        if explainer is not None:
            result["explain"] = explainer.explain(record)
        yield result
