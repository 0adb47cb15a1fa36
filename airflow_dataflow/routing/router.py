"""The router: rules compiled once, then `route(record)` per record."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from airflow_dataflow.errors import DataflowError
from airflow_dataflow.routing.codegen import build_match, build_select_cast
from airflow_dataflow.routing.conditions import (
    ConditionError,
    Node,
    Predicate,
    compile_condition_node,
)
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
    """One rule after compilation.

    `when`/`transform` are the closures (reference semantics); `node` is the condition tree
    the generated matcher is built from, `has_steps` whether `transform` does anything.
    """

    name: str
    priority: float
    when: Predicate | None
    transform: Transform
    to: tuple[str, ...]
    node: Node | None = None
    has_steps: bool = True


@dataclass(slots=True, frozen=True)
class _GenRule:
    name: str
    node: Node | None
    transform: Transform | None
    to: tuple[str, ...]


RawResult = tuple[list[str], list[tuple[str, Any]], list[Any] | None]


class Router:
    """Routes records through compiled rules; build it with `compile_router`.

    Limits (a record never crashes routing; it becomes a dead letter instead):

    * a record nested so deeply that copying or comparing it exceeds Python's recursion
      limit (about 1000 levels), or one that exhausts memory while being routed, becomes a
      dead letter whose reason names the error (`RecursionError`, `MemoryError`);
    * an integer string longer than 4300 digits compares as a float (`inf` if huge);
    * a transform step failing on a record (including on a too-deep value) dead-letters that
      record for that rule, naming the step.
    """

    def __init__(
        self, rules: Sequence[CompiledRule], *, mode: str, unmatched: Sequence[str]
    ) -> None:
        self._rules = tuple(rules)
        self._first = mode == "first"
        self.mode = mode
        self._unmatched = tuple(unmatched)
        self._match = self._generate()

    def _generate(self) -> Callable[[Any], RawResult]:
        generated = [
            _GenRule(rule.name, rule.node, rule.transform if rule.has_steps else None, rule.to)
            for rule in self._rules
        ]
        if any(rule.when is not None and rule.node is None for rule in self._rules):
            return self._match_closures  # rules built by hand without a condition tree
        try:
            return build_match(generated, first=self._first, unmatched=self._unmatched)
        except (SyntaxError, RecursionError, MemoryError, ValueError):  # pragma: no cover
            return self._match_closures  # e.g. a rule list too large for the compiler

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

    def route(self, record: Any, *, copies: bool = True) -> Routed:
        """Match, transform and address one record; never raises on bad records.

        Every delivery is an independent copy: never the input record, never shared with
        another delivery. `copies=False` skips the copies: a delivery may then be the input
        record itself, and one object may go to several destinations; use it only when the
        deliveries are serialised and never mutated (the route phase does).
        """
        return self._route(record, copies)

    @property
    def raw_match(self) -> Callable[[Any], RawResult]:
        """The bare matcher behind `route` for hot loops: `(rules, deliveries, failed)`.

        Only for a `dict` record; deliveries are uncopied (as with `copies=False`). It may
        raise on a pathological record, and `failed` lists per-rule failures in an internal
        form: when it raises or `failed` is non-empty, call `route(record, copies=False)`
        instead, which gives the same outcome as a `Routed` (and never raises).
        """
        return self._match

    def route_many(self, records: Iterable[Any], *, copies: bool = True) -> Iterator[Routed]:
        """`route` over many records, lazily; one `Routed` per record, in order.

        `copies=False`: as for `route`.
        """
        route = self._route
        for record in records:
            yield route(record, copies)

    def _route(self, record: Any, copies: bool) -> Routed:
        if not isinstance(record, dict):
            error = f"record is not a JSON object (got {_json_type(record)})"
            return Routed(dead=[DeadLetter(None, None, None, error, record)], status="dead")
        try:
            try:
                rules, deliveries, failed = self._match(record)
            except Exception:  # a pathological record: again rule by rule, errors per rule
                rules, deliveries, failed = self._match_closures(record)
            if copies and deliveries:
                deliveries = _independent(deliveries, record)
        except Exception as exc:  # RecursionError/MemoryError copying a pathological record
            return Routed(dead=[DeadLetter(None, None, None, failure(exc), record)], status="dead")
        if failed:
            dead = [
                error
                if isinstance(error, DeadLetter)
                else DeadLetter(name, error.step, error.kind, error.reason, record)
                for name, error in failed
            ]
            return Routed(rules, deliveries, dead, "dead")
        return Routed(rules, deliveries, [], "matched" if rules else "unmatched")

    def _match_closures(self, record: dict[str, Any]) -> RawResult:
        """The reference evaluation with the closures; a failing condition dead-letters."""
        rules: list[str] = []
        deliveries: list[tuple[str, Any]] = []
        failed: list[Any] = []
        for rule in self._rules:
            try:
                if rule.when is not None and not rule.when(record):
                    continue
            except Exception as exc:  # conditions never raise by design; keep the record
                letter = DeadLetter(rule.name, None, None, f"condition: {failure(exc)}", record)
                failed.append((rule.name, letter))
                continue
            rules.append(rule.name)
            try:
                out = rule.transform(record) if rule.has_steps else record
            except TransformStepError as exc:
                failed.append((rule.name, exc))
            else:
                deliveries.extend((destination, out) for destination in rule.to)
            if self._first:
                break
        if not rules and not failed:
            deliveries = [(destination, record) for destination in self._unmatched]
        return rules, deliveries, failed

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


def _independent(deliveries: list[tuple[str, Any]], record: Any) -> list[tuple[str, Any]]:
    """Deliveries made independent: the input record and repeated outputs are copied."""
    seen: list[Any] = []
    result = []
    for destination, out in deliveries:
        if out is record or any(out is other for other in seen):
            out = json_copy(out)
        else:
            seen.append(out)
        result.append((destination, out))
    return result


def failure(exc: BaseException) -> str:
    """A dead-letter reason for an error raised while routing one record."""
    if isinstance(exc, RecursionError):
        return f"record is nested too deeply to route (RecursionError: {exc})"
    if isinstance(exc, MemoryError):
        return "record is too large to route (MemoryError: out of memory)"
    return f"routing failed: {type(exc).__name__}: {exc}"


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
        node = None if when is None else compile_condition_node(when, variables=variables)
        steps = rule.get("transform")
        transform = compile_transforms(steps, variables=variables)
        transform = build_select_cast(steps) or transform
    except (ConditionError, JsonPathSyntaxError, TransformError) as exc:
        raise type(exc)(f"{where}: {exc}") from None
    to = _names(rule.get("to"), f"{where}.to")
    predicate = None if node is None else node.predicate
    return CompiledRule(name, priority, predicate, transform, to, node, bool(steps))


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
