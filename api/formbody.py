"""The body of an endpoint that does what a page's form does, checked by that same form.

The schema (for OpenAPI and the first type check) is read off the form's fields; the form
then validates as on the page, with the page's initial values for the fields a request
leaves out, since the page sends those too. So a value the page refuses, the API refuses,
with the page's message under the field's name.
"""

from __future__ import annotations

from typing import Any

from django import forms
from ninja import Schema
from pydantic import Field, create_model

from api.errors import form_errors


def _annotation(field: forms.Field) -> Any:
    if isinstance(field, forms.ModelMultipleChoiceField):
        return list[int]
    if isinstance(field, forms.MultipleChoiceField):
        return list[str]
    if isinstance(field, forms.ModelChoiceField):
        return int
    if isinstance(field, forms.BooleanField):
        return bool
    if isinstance(field, forms.FloatField):  # before IntegerField, its base class
        return float
    if isinstance(field, forms.IntegerField):
        return int
    return str


def _description(field: forms.Field) -> str:
    parts = [str(field.help_text)] if field.help_text else []
    choices = getattr(field, "choices", None)
    if isinstance(field, forms.ChoiceField) and not isinstance(field, forms.ModelChoiceField):
        values = [str(value) for value, _ in choices or [] if value != ""]
        if values:
            parts.append(f"one of: {', '.join(values)}")
    if isinstance(field, forms.ModelChoiceField):
        parts.append("an id")
    if field.required:
        parts.append("required")
    return "; ".join(parts)


def _initial(field: forms.Field) -> Any:
    """What the page's widget sends untouched: the initial value, or for a select with no
    initial value, its first option."""
    if field.initial is not None and not callable(field.initial):
        return field.initial
    single = isinstance(field, forms.ChoiceField) and not isinstance(
        field, forms.ModelChoiceField | forms.MultipleChoiceField
    )
    choices = list(getattr(field, "choices", None) or []) if single else []
    return choices[0][0] if choices and field.required else None


def form_schema(form_class: type[forms.Form], name: str) -> type[Schema]:
    """A schema with one optional property per form field (the form decides what is
    required), defaulting to the page's initial value."""
    fields: dict[str, Any] = {}
    for field_name, field in form_class.base_fields.items():
        initial = _initial(field)
        fields[field_name] = (
            _annotation(field) | None,
            Field(initial, description=_description(field) or None),
        )
    return create_model(name, __base__=Schema, **fields)


def form_from_body(form_class: type[forms.Form], body: Schema) -> forms.Form:
    """The page's form, bound to the body and valid; else the form's errors as a 400."""
    data = {k: v for k, v in body.model_dump().items() if v is not None}
    form = form_class(data=data)
    if not form.is_valid():
        raise form_errors(form)
    return form
