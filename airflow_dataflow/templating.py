"""Sandboxed Jinja rendering: record values are data, never template source."""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from typing import Annotated, Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import AfterValidator

_ENV = ImmutableSandboxedEnvironment(
    undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True
)
_WHOLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\}\}|\{\{).)*)\}\}\s*$", re.DOTALL)


def is_template(value: object) -> bool:
    """True when a string holds Jinja syntax."""
    return isinstance(value, str) and ("{{" in value or "{%" in value)


@lru_cache(maxsize=1024)
def compile_text(source: str) -> Template:
    """Compile a text template once; render it many times."""
    return _ENV.from_string(source)


@lru_cache(maxsize=1024)
def _compile_expression(expression: str) -> Callable[..., Any]:
    return _ENV.compile_expression(expression, undefined_to_none=False)


def check_syntax(source: str) -> None:
    """Raise ValueError naming the problem when ``source`` is not a valid template."""
    try:
        compile_text(source)
    except TemplateSyntaxError as exc:
        raise ValueError(f"invalid template {source!r}: {exc.message}") from None


def check_templates(value: Any) -> Any:
    """Raise ValueError when a string in ``value`` is a Jinja template with a syntax error."""
    if isinstance(value, str):
        if "{{" in value or "{%" in value:
            check_syntax(value)
    elif isinstance(value, list):
        for item in value:
            check_templates(item)
    elif isinstance(value, dict):
        for item in value.values():
            check_templates(item)
    return value


def _checked(source: str) -> str:
    if is_template(source):
        check_syntax(source)
    return source


TemplateText = Annotated[str, AfterValidator(_checked)]
"""A settings field holding a template: its syntax is checked when the route is loaded."""


def render_text(source: str, variables: dict[str, Any]) -> str:
    """Render a template to a string."""
    return compile_text(source).render(variables)


def render_value(value: Any, variables: dict[str, Any]) -> Any:
    """Render templates inside a value (strings, lists, dicts) to native values.

    A string that is one whole template (``"{{ params.n }}"``) keeps the native type of the
    result; strings mixing text and templates render to strings. Non-template values pass
    through unchanged.
    """
    if isinstance(value, str):
        if not is_template(value):
            return value
        whole = _WHOLE_EXPRESSION.match(value)
        if whole:
            result = _compile_expression(whole.group("expr").strip())(**variables)
            if isinstance(result, StrictUndefined):
                str(result)  # raises the undefined-variable error
            return result
        return render_text(value, variables)
    if isinstance(value, list):
        return [render_value(item, variables) for item in value]
    if isinstance(value, dict):
        return {key: render_value(item, variables) for key, item in value.items()}
    return value
