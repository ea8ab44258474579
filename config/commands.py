"""Helpers shared by management commands."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.core.management.base import CommandError


def object_by_name_or_id(model: Any, value: str, what: str) -> Any:
    """The row of `model` named `value` (or with that id); CommandError when there is none."""
    found = model.objects.filter(name=value).first()
    if found is None and value.isdigit():
        found = model.objects.filter(pk=int(value)).first()
    if found is None:
        raise CommandError(f"no {what} named {value!r}")
    return found


SOURCE_HELP = "source name or id; several: repeat the flag or separate them by commas (a,b)"


def add_source_argument(parser: Any, help: str = SOURCE_HELP) -> None:
    """`--source`, as every command that takes sources spells it: repeatable and comma lists."""
    parser.add_argument("--source", action="append", default=[], metavar="NAME[,NAME]", help=help)


def split_names(values: str | Iterable[str] | None) -> list[str]:
    """["a,b", "c"] or "a,b" -> ["a", "b", "c"]: a repeated flag and comma lists alike, blanks
    and repeats dropped. (call_command passes a single string, the parser a list.)"""
    if values is None:
        return []
    items = [values] if isinstance(values, str) else list(values)
    names = [name.strip() for item in items for name in str(item).split(",")]
    return list(dict.fromkeys(name for name in names if name))


def objects_by_names_or_ids(model: Any, values: str | Iterable[str] | None, what: str) -> list:
    """The rows named by `values` (see split_names), in the order given."""
    return [object_by_name_or_id(model, name, what) for name in split_names(values)]


def source_selection(
    values: str | Iterable[str] | None, prompt_ids: list[int] | None = None
) -> dict[str, Any]:
    """The prompt-selection keys for --source (and --prompt-ids): one source by its id,
    several by their prompts' ids, since a selection names one source. CommandError for an
    unknown source, or when sources and prompt ids together leave no prompt (an empty id
    list would select every prompt)."""
    from datasets_app.models import Prompt, Source

    by_id = {s.pk: s for s in objects_by_names_or_ids(Source, values, "source")}
    sources = list(by_id.values())  # "a,3" may name one source twice
    if len(sources) <= 1:
        return {
            "source_id": sources[0].pk if sources else None,
            "prompt_ids": prompt_ids or None,
        }
    ids = Prompt.objects.filter(source__in=sources).order_by("id")
    if prompt_ids:
        ids = ids.filter(pk__in=prompt_ids)
    found = list(ids.values_list("id", flat=True))
    if not found:
        names = ", ".join(s.name for s in sources)
        raise CommandError(
            f"no prompts in the sources {names}" + (" with those ids" if prompt_ids else "")
        )
    return {"source_id": None, "prompt_ids": found}
