"""Bearer tokens for the REST API, and each endpoint's role, checked before its input is read.

A token acts as its user: `request.user` and `request.auth` are that user, so the same
`access_*` selectors as the pages decide. An anonymous request, or one with an unknown or
revoked token, gets a JSON 401 (never the login page's redirect); a known user whose role
may not do this gets a 403.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.http import HttpRequest
from ninja.errors import AuthorizationError
from ninja.security import HttpBearer

from api.services import api_token_user
from config.access import access_is_annotator, access_is_curator, access_is_staff


class TokenAuth(HttpBearer):
    def __init__(self, check: Callable[[Any], bool] | None = None, who: str = "") -> None:
        super().__init__()
        self.check = check
        self.who = who

    def authenticate(self, request: HttpRequest, token: str) -> Any | None:
        user = api_token_user(token.strip())
        if user is None:
            return None
        request.user = user
        if self.check is not None and not self.check(user):
            raise AuthorizationError(message=f"only {self.who} may do this")
        return user


ANY_USER = TokenAuth()
ANNOTATORS = TokenAuth(access_is_annotator, "annotators, curators and staff")
CURATORS = TokenAuth(access_is_curator, "curators and staff")
STAFF = TokenAuth(access_is_staff, "staff")
