"""Who may read which stored file. Every way to a file (the media view, a signed URL behind
it, a download link on a page) asks `media_access` first, with the same rules as the pages.

Storage keys are laid out by kind, so the first folder says whose rules apply:
- `images/`: prompt images (content-addressed, so one file may back prompts of several
  sources): curators and staff, and annotators for the prompts of their assignments;
- `exports/`: curators and staff;
- `import-reports/<owner>/`: the user who imported, and staff;
- anything else (`uploads/`, files a future feature writes): staff only, so that a new
  folder is closed until someone opens it here.
"""

from __future__ import annotations

from enum import Enum
from pathlib import PurePosixPath
from typing import Any

from config.access import access_is_curator, access_is_staff


class MediaAccess(Enum):
    ALLOWED = "allowed"
    # The role may not read this kind of file at all (a page would answer 403).
    FORBIDDEN = "forbidden"
    # Someone else's file, or no such file: the answer does not say which (404).
    HIDDEN = "hidden"


IMPORT_REPORTS = "import-reports"
SHELL_OWNER = "shell"


def import_report_folder(user: Any) -> str:
    """The folder of an import report: its owner's id, or `shell` for a command-line import."""
    owner = str(user.pk) if user is not None and getattr(user, "pk", None) else SHELL_OWNER
    return f"{IMPORT_REPORTS}/{owner}"


def clean_media_key(path: str) -> str | None:
    """The storage key for a URL path, or None when it is not a plain relative file path."""
    parts = PurePosixPath(path).parts
    if not parts or path.endswith("/") or path.startswith("/"):
        return None
    if any(part in ("..", ".") or "\\" in part or "\x00" in part for part in parts):
        return None
    return "/".join(parts)


def media_access(user: Any, key: str) -> MediaAccess:
    """May this user read the stored file `key` (a clean key, see `clean_media_key`)?"""
    if not user.is_authenticated:
        return MediaAccess.FORBIDDEN
    if access_is_staff(user):
        return MediaAccess.ALLOWED
    folder, _, rest = key.partition("/")
    if folder == "images":
        return _prompt_image_access(user, key)
    if folder == "exports":
        return MediaAccess.ALLOWED if access_is_curator(user) else MediaAccess.FORBIDDEN
    if folder == IMPORT_REPORTS:
        owner = rest.partition("/")[0]
        return MediaAccess.ALLOWED if owner == str(user.pk) else MediaAccess.HIDDEN
    return MediaAccess.FORBIDDEN


def _prompt_image_access(user: Any, key: str) -> MediaAccess:
    if access_is_curator(user):
        return MediaAccess.ALLOWED
    from annotation.models import Assignment

    # The same rule as the item pages: an annotator sees the items assigned to them, every
    # image of their conversations included.
    mine = Assignment.objects.filter(annotator=user)
    assigned = (
        mine.filter(item__prompt__image=key).exists()
        or mine.filter(item__prompt__more_images__image=key).exists()
    )
    return MediaAccess.ALLOWED if assigned else MediaAccess.HIDDEN
