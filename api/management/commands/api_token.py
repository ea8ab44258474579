from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from api.selectors import api_tokens_of
from api.services import api_token_create, api_token_revoke


class Command(BaseCommand):
    help = (
        "Create a REST API token for a user (printed once, on the last line), list their "
        "tokens (--list) or revoke one (--revoke PREFIX). The token acts with the user's roles."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="what the token is for")
        action = parser.add_mutually_exclusive_group()
        action.add_argument("--revoke", metavar="PREFIX", help="revoke the token with this prefix")
        action.add_argument("--list", action="store_true", help="list the user's tokens")

    def handle(self, *args: object, **o: object) -> None:
        user = get_user_model().objects.filter(username=o["username"]).first()
        if user is None:
            raise CommandError(f"no user named {o['username']!r}")
        try:
            if o["revoke"]:
                token = api_token_revoke(user=user, prefix=str(o["revoke"]))
                self.stdout.write(f"token {token.prefix} of {user.username} revoked")
            elif o["list"]:
                for t in api_tokens_of(user):
                    state = f"revoked {t.revoked_at:%Y-%m-%d}" if t.revoked_at else "active"
                    used = f"{t.last_used_at:%Y-%m-%d %H:%M}" if t.last_used_at else "never"
                    self.stdout.write(f"{t.prefix}  {state:18} last used {used:16}  {t.name}")
            else:
                token, raw = api_token_create(user=user, name=str(o["name"]))
                self.stderr.write(f"token {token.prefix} for {user.username}; it is shown once:")
                # The last line of stdout is the token alone, so that scripts can take it.
                self.stdout.write(raw)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
