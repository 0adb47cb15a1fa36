"""Code generation: a rule list compiled into one Python function, built once per run.

The closures of `conditions.py` are correct and property-tested, but each leaf costs several
Python calls per record (path finder, list, per-value test). Here the condition trees become
the source of one function `match(record) -> (rules, deliveries, dead)`, executed with `exec`:

* a simple field path (`$.properties.amount`) is inlined as `dict.get` calls on the parent
  objects; parents shared by several leaves are looked up once per record (`_p0 = ...`), and a
  parent that is missing or not an object becomes an empty dict, so a lookup never fails;
* each leaf has an inline fast case for the type the rule value implies (a string for
  `eq: "DE"`, a numeric string for `gt: 100` ...); every other type goes to the leaf's
  precompiled per-value test from `conditions.py`, so the semantics stay exactly those of
  DESIGN.md "Conditions";
* paths with wildcards, indices or filters, and conditions nested deeper than
  `MAX_INLINE_DEPTH`, call the closure predicate of that subtree;
* rule values, regexes, sets and tests are bound as global names of the generated module,
  never written into the source as text (record values are never source either: the source
  only depends on the rules).

The generated function returns deliveries as `(destination, output)` pairs where the output
may be the input record itself and may repeat: copying is left to the caller (`Router`).
It may raise on pathological records (RecursionError on very deep values, ...): the router
then routes that record again through the closures, which handle errors rule by rule.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from airflow_dataflow.routing.conditions import Combination, Leaf, Node
from airflow_dataflow.routing.jsonpath import _FIELD, _parse_path, _simple_steps
from airflow_dataflow.routing.transforms import TransformStepError
from airflow_dataflow.routing.values import _ATOMS, _EXACT, comparable_number, is_number, json_copy

MAX_INLINE_DEPTH = 32
Match = Callable[[Any], tuple[list[str], list[tuple[str, Any]], list[Any] | None]]


def field_names(path: str) -> tuple[str, ...] | None:
    """`("a", "b")` for `$.a.b` (only single field names), else None."""
    steps = _simple_steps(_parse_path(path))
    if steps is None or any(kind != _FIELD for kind, _ in steps):
        return None
    return tuple(arg for _, arg in steps)


def _depth(node: Node) -> int:
    if isinstance(node, Leaf):
        return 1
    return 1 + max(_depth(part) for part in node.parts)


class _Builder:
    """Collects global names and parent-object lookups while emitting expressions."""

    def __init__(self) -> None:
        self.namespace: dict[str, Any] = {}
        self._names: dict[int, str] = {}
        self.parents: dict[tuple[str, ...], str] = {}
        self.numbers: dict[tuple[str, ...], str] = {}
        self.values: dict[tuple[str, ...], str] = {}
        self.eager_numbers = False  # parse numeric strings up front (every rule runs)
        self._counter = 0

    def bind(self, value: Any, prefix: str = "_k") -> str:
        """A global name holding `value` (one name per object)."""
        key = id(value)
        if key not in self._names:
            name = f"{prefix}{len(self._names)}"
            self._names[key] = name
            self.namespace[name] = value
        return self._names[key]

    def temp(self) -> str:
        self._counter += 1
        return f"_v{self._counter}"

    def parent(self, names: tuple[str, ...]) -> str:
        """The local holding the object at `names` (an empty dict when absent)."""
        if not names:
            return "r"
        if names not in self.parents:
            self.parent(names[:-1])
            self.parents[names] = f"_p{len(self.parents)}"
        return self.parents[names]

    def value(self, names: tuple[str, ...]) -> str:
        """The local holding the value at `names` (non-empty), `_MISSING` when absent.

        Looked up once per record at the top of the function (a `dict.get`, no side effects).
        """
        if names not in self.values:
            self.parent(names[:-1])
            self.values[names] = f"_a{len(self.values)}"
        return self.values[names]

    def number(self, names: tuple[str, ...], v: str) -> str:
        """`_number(v)` of the string value at `names`, computed at most once per record."""
        if names not in self.numbers:
            self.numbers[names] = f"_c{len(self.numbers)}"
        cache = self.numbers[names]
        if self.eager_numbers and names in self.values:
            return cache
        return f"({cache} if {cache} is not _UNSET else ({cache} := _number({v})))"

    def parent_lines(self, indent: str) -> list[str]:
        lines = []
        for names, local in self.parents.items():  # parents come before their children
            above = self.parent(names[:-1])
            key = self.bind(names[-1])
            lines.append(f"{indent}{local} = {above}.get({key}, _EMPTY)")
            lines.append(
                f"{indent}if {local}.__class__ is not dict and not isinstance({local}, dict):"
            )
            lines.append(f"{indent}    {local} = _EMPTY")
        for names, local in self.values.items():
            above = self.parent(names[:-1])
            lines.append(f"{indent}{local} = {above}.get({self.bind(names[-1])}, _MISSING)")
        for names, cache in self.numbers.items():
            value = self.values.get(names)
            if not (self.eager_numbers and value):
                lines.append(f"{indent}{cache} = _UNSET")
                continue
            # comparable_number(value) inlined, for a string value (only then is it read)
            lines += [
                f"{indent}if {value}.__class__ is str:",
                f"{indent}    try:",
                f"{indent}        {cache} = float({value})",
                f"{indent}    except ValueError:",
                f"{indent}        {cache} = None",
                f"{indent}    else:",
                f"{indent}        if not (-_EXACT < {cache} < _EXACT and {value}.isascii()"
                f" and '_' not in {value}):",
                f"{indent}            {cache} = _number({value})",
            ]
        return lines

    # ------------------------------------------------------------------ conditions

    def condition(self, node: Node, depth: int = 0) -> str:
        if depth == 0 and _depth(node) > MAX_INLINE_DEPTH:
            return f"{self.bind(node.predicate, '_pred')}(r)"
        if isinstance(node, Combination):
            parts = [self.condition(part, depth + 1) for part in node.parts]
            if node.kind == "not":
                return f"(not {parts[0]})"
            joiner = " and " if node.kind == "all" else " or "
            return "(" + joiner.join(parts) + ")"
        return self.leaf(node)

    def leaf(self, leaf: Leaf) -> str:
        names = field_names(leaf.path)
        if names is None:
            return f"{self.bind(leaf.predicate, '_pred')}(r)"
        if leaf.op == "exists":
            if not names:
                return "True" if leaf.expected else "False"
            container = self.parent(names[:-1])
            key = self.bind(names[-1])
            return f"({key} {'in' if leaf.expected else 'not in'} {container})"
        assert leaf.test is not None
        if not names:
            value = self.temp()
            return f"(({value} := r) is r and {self.value_test(leaf, value, names)})"
        value = self.value(names)
        return f"({value} is not _MISSING and {self.value_test(leaf, value, names)})"

    def value_test(self, leaf: Leaf, v: str, names: tuple[str, ...]) -> str:
        """An expression testing the local `v` like `leaf.test(v)` does."""
        op, expected = leaf.op, leaf.expected
        generic = f"{self.bind(leaf.test, '_test')}({v})"
        fast = None  # an expression exact for `type(v) is str`
        if op in ("eq", "ne") and (expected is True or expected is False or expected is None):
            return f"({v} {'is' if op == 'eq' else 'is not'} {expected!r})"
        if op in ("eq", "ne"):
            if isinstance(expected, str):
                fast = f"{v} {'==' if op == 'eq' else '!='} {self.bind(expected)}"
            elif is_number(expected):
                number = self.bind(expected)
                equal = f"((_n := {self.number(names, v)}) is not None and _n == {number})"
                if self.eager_numbers and names in self.values:
                    equal = f"({self.number(names, v)} == {number})"  # None == n is False
                fast = equal if op == "eq" else f"not {equal}"
        elif op in ("gt", "gte", "lt", "lte"):
            symbol = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[op]
            bound = self.bind(expected)
            if is_number(expected) and self.eager_numbers and names in self.values:
                number = self.number(names, v)
                fast = f"({number} is not None and {number} {symbol} {bound})"
            elif is_number(expected):
                fast = f"((_n := {self.number(names, v)}) is not None and _n {symbol} {bound})"
            else:
                fast = f"{v} {symbol} {bound}"
        elif op in ("in", "not_in"):
            if not any(is_number(member) for member in expected):
                strings = self.bind(frozenset(m for m in expected if isinstance(m, str)))
                fast = f"{v} {'in' if op == 'in' else 'not in'} {strings}"
        elif op == "contains":
            fast = f"{self.bind(expected)} in {v}" if isinstance(expected, str) else "False"
        elif op == "matches":
            search = self.bind(re.compile(expected).search)
            fast = f"{search}({v}) is not None"
        if fast is None:
            return generic
        return f"({fast} if {v}.__class__ is str else {generic})"


def build_match(rules: Sequence[Any], *, first: bool, unmatched: Sequence[str]) -> Match:
    """One function routing a record through `rules` (compiled rules in priority order).

    Each rule needs `name`, `node` (condition tree or None), `transform` (None when it has no
    steps) and `to`. The record must be a dict (the caller checks).
    """
    builder = _Builder()
    builder.eager_numbers = not first
    body: list[str] = []
    for rule in rules:
        condition = "True" if rule.node is None else builder.condition(rule.node)
        name = builder.bind(rule.name)
        body.append(f"    if {condition}:")
        body.append(f"        rules.append({name})")
        if rule.transform is None:
            for destination in rule.to:
                body.append(f"        deliveries.append(({builder.bind(destination)}, r))")
        else:
            inline = None
            if getattr(rule.transform, "steps", None) is not None:
                inline = _select_cast_lines(builder, rule.transform.steps, "            ", True)
            body.append("        try:")
            if inline is not None:
                body.extend(inline)
            else:
                body.append(f"            out = {builder.bind(rule.transform, '_transform')}(r)")
            body.append("        except _TransformStepError as exc:")
            body.append("            if dead is None:")
            body.append("                dead = []")
            body.append(f"            dead.append(({name}, exc))")
            body.append("        else:")
            for destination in rule.to:
                body.append(f"            deliveries.append(({builder.bind(destination)}, out))")
        if first:
            body.append("        return rules, deliveries, dead")
    rest = ", ".join(f"({builder.bind(destination)}, r)" for destination in unmatched)
    lines = ["def match(r):", *builder.parent_lines("    ")]
    lines += ["    rules = []", "    deliveries = []", "    dead = None", *body]
    lines += ["    if not rules:", f"        return rules, [{rest}], None"]
    lines += ["    return rules, deliveries, dead"]
    source = "\n".join(lines) + "\n"
    namespace = builder.namespace
    namespace.update(
        _EMPTY={},
        _MISSING=object(),
        _UNSET=object(),
        _EXACT=_EXACT,
        _ATOMS=_ATOMS,
        _json_copy=json_copy,
        _number=comparable_number,
        _TransformStepError=TransformStepError,
    )
    exec(compile(source, "<dataflow router>", "exec"), namespace)
    match = namespace["match"]
    match.source = source  # for debugging: print(router._match.source)
    return match


def _select_cast_lines(
    builder: _Builder, steps: Any, indent: str, hoisted: bool
) -> list[str] | None:
    """Statements setting `out` as `steps` (select + casts) on the record `r`, else None.

    They raise `_TransformStepError` like `compile_transforms(steps)`. `hoisted`: inside the
    generated `match`, where values the conditions read are already locals (`_MISSING` when
    absent) and parent objects are looked up at the top; else parent lookups come first here.
    """
    from airflow_dataflow.routing.casts import CASTS

    if not isinstance(steps, (list, tuple)) or not steps:
        return None
    kinds = [next(iter(step)) for step in steps]
    if kinds[0] != "select" or any(kind != "cast" for kind in kinds[1:]):
        return None
    items = []
    for name, path in steps[0]["select"].items():
        names = field_names(path) if isinstance(path, str) else None
        if names is None or not isinstance(name, str) or "." in name:
            return None
        item = builder.temp()
        if hoisted and names in builder.values:
            local = builder.values[names]
            copied = (
                f"({local} if {local}.__class__ in _ATOMS"
                f" else None if {local} is _MISSING else _json_copy({local}))"
            )
        else:
            value = f"{builder.parent(names[:-1])}.get({builder.bind(names[-1])})" if names else "r"
            copied = f"({item} if ({item} := {value}).__class__ in _ATOMS else _json_copy({item}))"
        items.append(f"{builder.bind(name)}: {copied}")
    lines = [f"{indent}try:"]
    if not hoisted:
        lines += builder.parent_lines(indent + "    ")
    lines += [f"{indent}    out = {{{', '.join(items)}}}", f"{indent}except Exception as exc:"]
    lines += [f"{indent}    raise _TransformStepError(0, 'select', str(exc)) from exc"]
    for index, step in enumerate(steps[1:], start=1):
        casts = [f"{indent}try:"]
        for name, type_name in step["cast"].items():
            if not isinstance(name, str) or "." in name:
                return None
            key, convert = builder.bind(name), builder.bind(CASTS[type_name], "_cast")
            prefix = builder.bind(f"cast {name} to {type_name}: ")
            cast = [f"value = out.get({key}, _MISSING)", "if value is not _MISSING:"]
            fallback = [
                "try:",
                f"    out[{key}] = {convert}(value)",
                "except ValueError as exc:",
                f"    raise ValueError({prefix} + str(exc)) from exc",
            ]
            if type_name == "float":  # to_float's common case inlined: a plain numeric string
                cast += [
                    "    number = _MISSING",
                    "    if value.__class__ is str:",
                    "        try:",
                    "            number = float(value)",
                    "        except ValueError:",
                    "            number = _MISSING",
                    "        else:",
                    "            if not (-_EXACT < number < _EXACT and value.isascii()"
                    " and '_' not in value):",
                    "                number = _MISSING",
                    "    if number is not _MISSING:",
                    f"        out[{key}] = number",
                    "    else:",
                    *("        " + line for line in fallback),
                ]
            elif type_name == "int":  # to_int's common case inlined: a plain digit string
                cast += [
                    "    if value.__class__ is str and value.isascii() and value.isdigit()"
                    " and len(value) < 4000:",
                    f"        out[{key}] = int(value)",
                    "    else:",
                    *("        " + line for line in fallback),
                ]
            else:
                cast += ["    " + line for line in fallback]
            casts += [f"{indent}    {line}" for line in cast]
        lines += casts
        lines += [f"{indent}except Exception as exc:"]
        lines += [f"{indent}    raise _TransformStepError({index}, 'cast', str(exc)) from exc"]
    return lines


def build_select_cast(steps: Any) -> Callable[[Any], Any] | None:
    """A generated transform for the common `select` (+ `cast` steps) shape, else None.

    Only when the first step is a `select` of simple field paths into undotted names and every
    later step is a `cast` of undotted names: the result is then built as one dict display.
    Same results and errors as `compile_transforms(steps)` (which validated the steps).
    The function's `steps` attribute lets `build_match` inline it into the matcher.
    """
    from airflow_dataflow.routing.values import _ATOMS, json_copy

    builder = _Builder()
    body = _select_cast_lines(builder, steps, "    ", hoisted=False)
    if body is None:
        return None
    lines = ["def transform(r):", *body, "    return out"]
    source = "\n".join(lines) + "\n"
    namespace = builder.namespace
    namespace.update(
        _EMPTY={},
        _MISSING=object(),
        _ATOMS=_ATOMS,
        _EXACT=_EXACT,
        _json_copy=json_copy,
        _TransformStepError=TransformStepError,
    )
    exec(compile(source, "<dataflow transform>", "exec"), namespace)
    transform = namespace["transform"]
    transform.source = source
    transform.steps = steps
    return transform
