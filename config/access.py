"""Who may do what. Views ask these, never `user.groups` directly."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.core.exceptions import PermissionDenied


def _group_names(user: Any) -> frozenset[str]:
    # Cached on the user object: one query per request, however many checks a page makes.
    if not hasattr(user, "_studio_groups"):
        user._studio_groups = frozenset(user.groups.values_list("name", flat=True))
    return user._studio_groups


def _in_group(user: Any, *names: str) -> bool:
    if not user.is_authenticated:
        return False
    if user.is_superuser:
        return True
    return not _group_names(user).isdisjoint(names)


def access_is_staff(user: Any) -> bool:
    """Staff launch jobs and see operations: the `staff` group, or Django staff."""
    return bool(user.is_authenticated and user.is_staff) or _in_group(user, "staff")


def access_is_curator(user: Any) -> bool:
    return access_is_staff(user) or _in_group(user, "curator")


def _require(check: Callable[[Any], bool]) -> Callable:
    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            if not check(request.user):
                raise PermissionDenied
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


def access_is_annotator(user: Any) -> bool:
    """Annotators rate; curators and staff may annotate too. A logged-in user without a
    role sees nothing but the home page."""
    return access_is_curator(user) or _in_group(user, "annotator")


staff_required = _require(access_is_staff)
curator_required = _require(access_is_curator)
annotator_required = _require(access_is_annotator)
