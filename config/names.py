"""Names that become folder names: dataset versions (export folders), training runs
(checkpoint folders) and sources (report files). One rule, checked by the forms (as a field
error) and again by the services (for commands and the API), so no entry point can write
outside its folder."""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
SAFE_NAME_RULE = "letters, digits, '.', '_' and '-', starting with a letter or digit"
SAFE_NAME_MAX = 150


def safe_name(value: str, what: str = "name") -> str:
    """`value` stripped, or ValueError saying why it cannot name a folder."""
    value = (value or "").strip()
    if not value:
        raise ValueError(f"a {what} is required")
    if len(value) > SAFE_NAME_MAX:
        raise ValueError(f"a {what} has at most {SAFE_NAME_MAX} characters")
    if not SAFE_NAME.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid {what}: use only {SAFE_NAME_RULE}")
    return value


def validate_safe_name(value: str) -> None:
    """The same rule as a form field validator."""
    try:
        safe_name(value)
    except ValueError as exc:
        raise ValidationError(str(exc), code="unsafe_name") from None
