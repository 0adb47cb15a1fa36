"""The router: rules compiled once, then `route(record)` per record."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from airflow_dataflow.errors import DataflowError
from airflow_dataflow.routing.conditions import ConditionError, Predicate, compile_condition
from airflow_dataflow.routing.jsonpath import JsonPathSyntaxError
from airflow_dataflow.routing.transforms import (
    Transform,
    TransformError,
    TransformStepError,
    compile_transforms,
)
from airflow_dataflow.routing.values import is_number, json_copy, kind_of

Status = Literal["matched", "unmatched", "dead"]
MODES = ("all", "first")


class RuleError(DataflowError, ValueError):
    """A malformed rule list (missing name, duplicate name, bad `to`, bad mode, ...)."""


@dataclass(slots=True)
class DeadLetter:
    """Why one record could not be routed: the rule and transform step that failed, if any."""

    rule: str | None
    step: int | None
    step_kind: str | None
    error: str
    record: Any


@dataclass(slots=True)
class Routed:
    """The outcome of routing one record."""

    rules: list[str] = field(default_factory=list)
    deliveries: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    status: Status = "unmatched"


@dataclass(slots=True, frozen=True)
class CompiledRule:
    """One rule after compilation."""

    name: str
    priority: float
    when: Predicate | None
    transform: Transform
    to: tuple[str, ...]


class Router:
    """Routes records through compiled rules; build it with `compile_router`."""

    def __init__(
        self, rules: Sequence[CompiledRule], *, mode: str, unmatched: Sequence[str]
    ) -> None:
        self._rules = tuple(rules)
        self._first = mode == "first"
        self.mode = mode
        self._unmatched = tuple(unmatched)

    @property
    def rule_names(self) -> list[str]:
        """Rule names in evaluation (priority) order."""
        return [rule.name for rule in self._rules]

    @property
    def destinations(self) -> list[str]:
        """Every destination a record can reach, unmatched destinations included."""
        names = [name for rule in self._rules for name in rule.to] + list(self._unmatched)
        return list(dict.fromkeys(names))

    @property
    def unmatched(self) -> list[str]:
        """Destinations of records that no rule matched."""
        return list(self._unmatched)

    def rule_destinations(self, rule: str) -> list[str]:
        """The `to:` list of one rule."""
        for compiled in self._rules:
            if compiled.name == rule:
                return list(compiled.to)
        raise KeyError(rule)

    def route(self, record: Any) -> Routed:
        """Match, transform and address one record; never raises on bad records."""
        if not isinstance(record, dict):
            error = f"record is not a JSON object (got {_json_type(record)})"
            return Routed(dead=[DeadLetter(None, None, None, error, record)], status="dead")
        routed = Routed()
        for rule in self._rules:
            try:
                if rule.when is not None and not rule.when(record):
                    continue
            except (
                Exception
            ) as exc:  # conditions never raise by design; keep the record if one does
                routed.dead.append(DeadLetter(rule.name, None, None, f"condition: {exc}", record))
                continue
            routed.rules.append(rule.name)
            try:
                out = rule.transform(record)
            except TransformStepError as exc:
                routed.dead.append(DeadLetter(rule.name, exc.step, exc.kind, exc.reason, record))
            else:
                for index, destination in enumerate(rule.to):
                    routed.deliveries.append((destination, out if index == 0 else json_copy(out)))
            if self._first:
                break
        if not routed.rules and not routed.dead:
            for destination in self._unmatched:
                routed.deliveries.append((destination, json_copy(record)))
        routed.status = "dead" if routed.dead else "matched" if routed.rules else "unmatched"
        return routed

    def explain(self, record: Any) -> list[dict[str, Any]]:
        """Per rule in priority order: `{"rule": name, "matched": bool}`."""
        report = []
        for rule in self._rules:
            try:
                matched = isinstance(record, dict) and (rule.when is None or rule.when(record))
            except Exception:
                matched = False
            report.append({"rule": rule.name, "matched": bool(matched)})
        return report


def _json_type(value: Any) -> str:
    kind = kind_of(value)
    return {"array": "list", "object": "dict"}.get(kind, kind)


def _names(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise RuleError(f"{where}: needs a list of destination names, got {kind_of(value)}")
    for name in value:
        if not isinstance(name, str) or not name:
            raise RuleError(f"{where}: destination names are non-empty strings, got {name!r}")
    return tuple(value)


def _compile_rule(rule: Any, index: int, variables: Mapping[str, Any] | None) -> CompiledRule:
    if not isinstance(rule, Mapping):
        raise RuleError(f"rules[{index}]: a rule must be a mapping, got {kind_of(rule)}")
    name = rule.get("name")
    if not isinstance(name, str) or not name:
        raise RuleError(f"rules[{index}]: a rule needs a non-empty string 'name'")
    where = f"rule {name!r}"
    priority = rule.get("priority")
    priority = 0 if priority is None else priority
    if not is_number(priority):
        raise RuleError(f"{where}: 'priority' must be a number, got {priority!r}")
    try:
        when = rule.get("when")
        predicate = None if when is None else compile_condition(when, variables=variables)
        transform = compile_transforms(rule.get("transform"), variables=variables)
    except (ConditionError, JsonPathSyntaxError, TransformError) as exc:
        raise type(exc)(f"{where}: {exc}") from None
    return CompiledRule(name, priority, predicate, transform, _names(rule.get("to"), f"{where}.to"))


def compile_router(
    rules: Sequence[Mapping[str, Any]],
    *,
    mode: str = "all",
    unmatched: Sequence[str] = (),
    variables: Mapping[str, Any] | None = None,
) -> Router:
    """Compile rules once (paths, regexes, templates rendered with `variables`) into a Router."""
    if mode not in MODES:
        raise RuleError(f"mode: must be 'all' or 'first', got {mode!r}")
    if isinstance(rules, (str, Mapping)) or not isinstance(rules, Sequence):
        raise RuleError(f"rules: must be a list of rules, got {kind_of(rules)}")
    compiled = [_compile_rule(rule, index, variables) for index, rule in enumerate(rules)]
    seen: set[str] = set()
    for rule in compiled:
        if rule.name in seen:
            raise RuleError(f"rule {rule.name!r}: duplicate rule name")
        seen.add(rule.name)
    ordered = sorted(enumerate(compiled), key=lambda item: (-item[1].priority, item[0]))
    return Router(
        [rule for _, rule in ordered], mode=mode, unmatched=_names(unmatched, "unmatched")
    )
