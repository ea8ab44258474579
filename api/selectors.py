from __future__ import annotations

from typing import Any

from django.db.models import F, QuerySet

from api.models import ApiToken


def api_tokens_of(user: Any) -> QuerySet[ApiToken]:
    """A person's tokens: active ones first, then the revoked; newest first in each."""
    return ApiToken.objects.filter(user=user).order_by(
        F("revoked_at").desc(nulls_first=True), "-created_at", "-id"
    )
