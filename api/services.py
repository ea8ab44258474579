"""Writes for API tokens: create (the raw token is returned once), revoke, authenticate."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone

from api.core.tokens import token_digest, token_new, token_prefix
from api.models import ApiToken

# last_used_at is a hint for people, not an audit log: one write a minute per token at most,
# so that a busy client does not turn every read into a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def api_token_create(*, user: Any, name: str = "") -> tuple[ApiToken, str]:
    """A new token for `user`: the row and the raw token, which is never stored or shown
    again."""
    if not user.is_active:
        raise ValueError(f"{user.username} is not an active user")
    new = token_new()
    token = ApiToken.objects.create(
        user=user, name=name.strip()[:100], prefix=new.prefix, digest=new.digest
    )
    return token, new.raw


def api_token_revoke(*, user: Any, prefix: str) -> ApiToken:
    """Revoke one of `user`'s tokens by its prefix; ValueError when they have no such
    active token."""
    token = ApiToken.objects.filter(user=user, prefix=prefix.strip(), revoked_at=None).first()
    if token is None:
        raise ValueError(f"{user.username} has no active token {prefix!r}")
    token.revoked_at = timezone.now()
    token.save(update_fields=["revoked_at"])
    return token


def api_token_user(raw: str) -> Any | None:
    """The active user an unrevoked token belongs to, else None."""
    if token_prefix(raw) is None:
        return None
    token = (
        ApiToken.objects.select_related("user")
        .filter(digest=token_digest(raw), revoked_at=None, user__is_active=True)
        .first()
    )
    if token is None:
        return None
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token.user
