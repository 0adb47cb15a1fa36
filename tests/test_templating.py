"""Sandboxed Jinja: native values for whole templates, strict undefined, records stay data."""

from __future__ import annotations

from typing import Any

import pytest
from jinja2.exceptions import SecurityError, TemplateSyntaxError, UndefinedError

from airflow_dataflow.context import RunContext
from airflow_dataflow.templating import is_template, render_text, render_value

VARS: dict[str, Any] = {
    "params": {
        "n": 100,
        "ratio": 0.5,
        "code": "123",
        "flag": False,
        "none": None,
        "countries": ["DE", "FR"],
        "nested": {"a": {"b": 7}},
    },
    "ds": "2024-01-02",
    "run_id": "manual__2024-01-02T00:00:00+00:00",
}


# --- Native values ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ params.n }}", 100),
        ("{{ params.ratio }}", 0.5),
        ("{{ params.code }}", "123"),  # a string param stays a string, even if it looks numeric
        ("{{ params.flag }}", False),
        ("{{ params.none }}", None),
        ("{{ params.countries }}", ["DE", "FR"]),
        ("{{ params.nested }}", {"a": {"b": 7}}),
        ("{{ params.nested.a.b }}", 7),
        ("{{ params.n * 2 }}", 200),
        ("{{ params.n > 50 }}", True),
        ("  {{ params.n }}  ", 100),  # surrounding whitespace does not make it text
        ("{{params.n}}", 100),
    ],
)
def test_whole_template_renders_to_a_native_value(template: str, expected: Any) -> None:
    result = render_value(template, VARS)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("min {{ params.n }}", "min 100"),
        ("{{ params.n }}{{ params.n }}", "100100"),
        ("{{ params.n }} and {{ params.code }}", "100 and 123"),
        ("{{ ds }}/{{ run_id }}.jsonl", "2024-01-02/manual__2024-01-02T00:00:00+00:00.jsonl"),
        ("{% if params.flag %}yes{% else %}no{% endif %}", "no"),
        ("{{ params.countries | join(',') }}!", "DE,FR!"),
    ],
)
def test_mixed_text_renders_to_a_string(template: str, expected: str) -> None:
    assert render_value(template, VARS) == expected


def test_nested_lists_and_dicts_are_rendered_recursively() -> None:
    value = {
        "in": ["{{ params.countries[0] }}", "IT", "{{ params.n }}"],
        "meta": {"label": "n={{ params.n }}", "n": "{{ params.n }}", "keep": 3, "none": None},
        "plain": "no template",
    }
    assert render_value(value, VARS) == {
        "in": ["DE", "IT", 100],
        "meta": {"label": "n=100", "n": 100, "keep": 3, "none": None},
        "plain": "no template",
    }


def test_non_templates_pass_through_unchanged() -> None:
    for value in [1, 2.5, True, None, "plain", "a } b { c", ["x", 1], {"k": "v"}]:
        assert render_value(value, {}) == value
    assert not is_template("just text")
    assert is_template("{{ x }}") and is_template("{% if x %}{% endif %}")


def test_render_text_always_gives_a_string() -> None:
    assert render_text("{{ params.n }}", VARS) == "100"


def test_run_context_variables() -> None:
    context = RunContext(route="orders", run_id="r1", ds="2024-01-02", params={"n": 1})
    variables = context.template_vars(destination="out")
    template = "{{ route }}/{{ destination }}/{{ run_id }}/{{ ds }}/{{ params.n }}"
    assert render_value(template, variables) == "orders/out/r1/2024-01-02/1"


# --- Strictness -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "template",
    [
        "{{ missing }}",
        "text {{ missing }}",
        "{{ params.missing }}",
        "{{ params.nested.a.missing }}",
        "{{ missing.attr }}",
        "x {{ missing | upper }}",
    ],
)
def test_undefined_variables_raise(template: str) -> None:
    with pytest.raises(UndefinedError):
        render_value(template, VARS)


def test_undefined_inside_a_nested_value_raises() -> None:
    with pytest.raises(UndefinedError):
        render_value({"a": ["ok", "{{ missing }}"]}, VARS)


def test_default_filter_handles_a_missing_value() -> None:
    assert render_value("{{ params.missing | default(5) }}", VARS) == 5


def test_syntax_error_raises() -> None:
    with pytest.raises(TemplateSyntaxError):
        render_value("{{ params.n ", VARS)
    with pytest.raises(TemplateSyntaxError):
        render_value("a {% if %}", VARS)


# --- Sandbox ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "template",
    [
        "{{ ().__class__ }}",
        "{{ ().__class__.__base__.__subclasses__() }}",
        "x {{ ().__class__ }}",
        "{{ params.__class__ }}",
        "{{ ''.__class__.__mro__ }}",
        "{{ render_value.__globals__ }}",
    ],
)
def test_sandbox_blocks_dunder_access(template: str) -> None:
    from airflow_dataflow import templating

    variables = {**VARS, "render_value": templating.render_value}
    with pytest.raises(SecurityError):
        render_value(template, variables)


def test_sandbox_blocks_format_string_escapes() -> None:
    with pytest.raises(SecurityError):
        render_value("{{ '{0.__class__}'.format(params) }}", VARS)


# --- Records are data -------------------------------------------------------------------------


def test_record_values_are_never_evaluated() -> None:
    record = {"name": "{{ 7*7 }}", "evil": "{{ ().__class__ }}", "stmt": "{% raw %}x"}
    variables = {**VARS, "record": record}
    assert render_value("{{ record.name }}", variables) == "{{ 7*7 }}"
    assert render_value("Hello {{ record.name }}!", variables) == "Hello {{ 7*7 }}!"
    assert render_value("{{ record.evil }}", variables) == "{{ ().__class__ }}"
    assert render_value("{{ record.stmt }}", variables) == "{% raw %}x"
    assert render_value("{{ record }}", variables) == record
    assert render_text("{{ record.name }}", variables) == "{{ 7*7 }}"


def test_no_autoescape_for_text() -> None:
    variables = {"record": {"html": "<b>&</b>"}}
    assert render_value("v={{ record.html }}", variables) == "v=<b>&</b>"
