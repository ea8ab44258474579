"""One shape for every refused input: 400 with `{"detail": [{"loc": [...], "msg": ...}]}`,
whether pydantic refused the JSON, a page's form refused a field, or a service refused the
request (then `loc` names the part of the body, or is just ["body"])."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from django import forms
from ninja.errors import ValidationError

Loc = Sequence[str | int]


def bad_request(errors: Iterable[tuple[Loc, str]], *, under: Loc = ("body",)) -> ValidationError:
    return ValidationError(
        [{"type": "value_error", "loc": [*under, *loc], "msg": msg} for loc, msg in errors]
    )


def form_errors(form: forms.Form) -> ValidationError:
    """A page form's errors, each under its field (non-field errors under the body)."""
    return bad_request(
        ((() if name == forms.forms.NON_FIELD_ERRORS else (name,)), str(message))
        for name, messages in form.errors.items()
        for message in messages
    )
