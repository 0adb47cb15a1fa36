"""Checks ``validate`` adds on top of loading: every rule compiles as it will at run time.

Kept out of DAG parsing (it needs the JSONPath parser and the routing engine), run by the
``validate`` command so that a bad value type, an unknown template variable or a rule the
router refuses is reported at its line, not when the route runs.
"""

from __future__ import annotations

import re
from typing import Any

from jinja2 import UndefinedError

from airflow_dataflow.config.issues import suggest
from airflow_dataflow.config.loader import LoadedRoute
from airflow_dataflow.errors import ConfigIssue

_MISSING_PARAM = re.compile(r"has no attribute '(\w+)'")


def check_rules(route: LoadedRoute) -> list[ConfigIssue]:
    """Compile each rule with the params' defaults; one issue per rule that fails."""
    from airflow_dataflow.routing import compile_router

    config = route.config
    defaults = config.param_defaults(with_value_only=True)
    without_default = set(config.params) - set(defaults)
    variables = {
        "params": defaults,
        "route": route.route_id,
        "run_id": "validate",
        "ds": "2000-01-01",
    }
    issues: list[ConfigIssue] = []
    for index, rule in enumerate(config.rules):
        data: dict[str, Any] = rule.model_dump(by_alias=True, exclude_unset=True)
        try:
            compile_router([data], mode=config.mode, variables=variables)
        except (UndefinedError, ValueError) as exc:
            missing = _MISSING_PARAM.search(str(exc))
            if missing and missing.group(1) in without_default:
                continue  # given by the trigger's conf at run time
            hint = suggest(missing.group(1), config.params) if missing else ""
            issues.append(_issue(route, index, f"{exc}{hint}"))
    return issues


def _issue(route: LoadedRoute, index: int, message: str) -> ConfigIssue:
    if route.document is None:
        return ConfigIssue(route.file, 1, 1, message)
    return route.document.issue(("rules", index), message)
