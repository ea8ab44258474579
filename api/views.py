"""The account page for REST API tokens: list, create (shown once), revoke."""

from __future__ import annotations

from django.contrib import messages
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from api.forms import TokenForm
from api.selectors import api_tokens_of
from api.services import api_token_create, api_token_revoke


def token_list(request):
    """Any logged-in person may hold tokens: a token can do only what its user's roles allow."""
    form = TokenForm(request.POST or None)
    created = None
    if request.method == "POST" and form.is_valid():
        token, raw = api_token_create(user=request.user, name=form.cleaned_data["name"])
        # Rendered in this response only, never put in the session or a message.
        created = {"token": token, "raw": raw}
        form = TokenForm()
    context = {"form": form, "created": created, "tokens": api_tokens_of(request.user)}
    return render(request, "api/tokens.html", context)


@require_POST
def token_revoke(request, prefix: str):
    try:
        api_token_revoke(user=request.user, prefix=prefix)
    except ValueError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Token {prefix} revoked.")
    return redirect("account:tokens")
