"""Filters applied to the rows of any strategy, and the train/eval split.

They run in a fixed order, whatever the order of the keys in `filters`: first the quality
filters (dedupe, drop_ties, min_margin, min_chars, max_chars), then `subsample`, then
`eval_fraction`, so that a subsample is drawn from rows that passed, and the split is made
on what is kept. Dropped rows are counted by reason (rows, not prompts). The rows come only
from train-eligible prompts (run_strategy leaves held-out ones out), so "eval" is carved from
those: a test or validation prompt is never moved into either split here.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from dataclasses import replace
from typing import Any

from datasets_app.core.curation.types import PreferenceRow, SftRow

Row = PreferenceRow | SftRow
Rows = list[PreferenceRow] | list[SftRow]

FILTER_KEYS = (
    "dedupe",
    "drop_ties",
    "min_margin",
    "min_chars",
    "max_chars",
    "subsample",
    "eval_fraction",
)
DPO_ONLY_FILTERS = ("drop_ties", "min_margin")


def unit_hash(*parts: object) -> float:
    """A stable number in [0, 1) for the parts: the same on every machine and Python run.

    Callers salt it ("split", "subsample") so that the eval split and a subsample do not pick
    the same prompts: both take the lowest hashes.
    """
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).hexdigest()
    return int(digest[:16], 16) / 2**64


def split_of(prompt_id: int, seed: int, eval_fraction: float) -> str:
    """ "eval" or "train", from the prompt alone: a prompt never lands in both, and adding
    prompts never moves an existing one."""
    return "eval" if unit_hash("split", seed, prompt_id) < eval_fraction else "train"


def check_filters(filters: dict[str, Any], kind: str) -> dict[str, Any]:
    """Validate `filters` for rows of `kind` ("dpo", "sft", "steerlm"); return them unchanged.

    A filter set to None (or False) is off.
    """
    unknown = sorted(set(filters) - set(FILTER_KEYS))
    if unknown:
        raise ValueError(
            f"unknown filter(s): {', '.join(unknown)}; filters are {', '.join(FILTER_KEYS)}"
        )
    on = {key: value for key, value in filters.items() if value is not None}
    for key in ("dedupe", "drop_ties"):
        if key in on and not isinstance(on[key], bool):
            raise ValueError(f"filter {key} must be true or false, not {on[key]!r}")
    if "min_margin" in on and not is_number(on["min_margin"]):
        raise ValueError(f"filter min_margin must be a number, not {on['min_margin']!r}")
    for key, least in (("min_chars", 0), ("max_chars", 1), ("subsample", 1)):
        if key in on and (not is_int(on[key]) or on[key] < least):
            raise ValueError(f"filter {key} must be an integer >= {least}, not {on[key]!r}")
    if "min_chars" in on and "max_chars" in on and on["min_chars"] > on["max_chars"]:
        raise ValueError("filter min_chars is larger than max_chars")
    if "eval_fraction" in on:
        fraction = on["eval_fraction"]
        if not is_number(fraction) or not 0 <= fraction < 1:
            raise ValueError(f"filter eval_fraction must be in [0, 1), not {fraction!r}")
    if kind != "dpo":
        for key in DPO_ONLY_FILTERS:
            if on.get(key) not in (None, False):
                raise ValueError(f"filter {key} applies to DPO pairs, not to {kind} rows")
    return filters


def apply_filters(rows: Rows, filters: dict[str, Any], seed: int) -> tuple[Rows, dict[str, int]]:
    """Filter, subsample and split `rows`; return the kept rows and the drop counts."""
    is_sft = any(isinstance(row, SftRow) for row in rows)
    check_filters(filters, "sft" if is_sft else "dpo")
    kept: list[Any] = sorted(rows, key=row_sort_key)  # duplicates keep the first of this order
    dropped: Counter[str] = Counter()

    def keep(reason: str, ok: Any) -> None:
        nonlocal kept
        passed = [row for row in kept if ok(row)]
        if len(passed) < len(kept):
            dropped[reason] += len(kept) - len(passed)
        kept = passed

    if filters.get("dedupe"):
        if not is_sft:
            keep("chosen and rejected identical", lambda r: r.chosen.strip() != r.rejected.strip())
        seen: set[tuple[Any, ...]] = set()

        def first_time(row: Row) -> bool:
            # The prompt id, not the question text: two images may share a question.
            if isinstance(row, SftRow):
                key: tuple[Any, ...] = (row.prompt_id, row.question, row.response.strip())
            else:
                key = (row.prompt_id, row.question, row.chosen.strip(), row.rejected.strip())
            if key in seen:
                return False
            seen.add(key)
            return True

        keep("duplicate row", first_time)
    if filters.get("drop_ties"):
        keep("tie (margin 0)", lambda r: r.margin != 0)
    if filters.get("min_margin") is not None:
        least = filters["min_margin"]
        keep(f"margin below {least:g}", lambda r: r.margin >= least)
    if filters.get("min_chars") is not None:
        n = filters["min_chars"]
        keep(f"response shorter than {n} characters", lambda r: min(map(len, _texts(r))) >= n)
    if filters.get("max_chars") is not None:
        n = filters["max_chars"]
        keep(f"response longer than {n} characters", lambda r: max(map(len, _texts(r))) <= n)
    if filters.get("subsample") is not None:
        n = filters["subsample"]
        # Ranked by a hash of the row, not drawn from a shuffled list: the sample does not
        # depend on the input order. Rows hold dicts (unhashable), hence id().
        ranked = sorted(kept, key=lambda r: unit_hash("subsample", seed, *row_sort_key(r)))
        sample = {id(row) for row in ranked[:n]}
        keep("subsampled out", lambda r: id(r) in sample)
    fraction = filters.get("eval_fraction")
    if fraction:
        kept = [replace(row, split=split_of(row.prompt_id, seed, fraction)) for row in kept]
        kept.sort(key=row_sort_key)
    return kept, dict(dropped)


def row_sort_key(row: Row) -> tuple[str, int, int, int]:
    """The canonical row order: split, prompt, then the completion ids (-1 for none)."""
    if isinstance(row, SftRow):
        ids = (_id(row.completion_id), -1)
    else:
        ids = (_id(row.chosen_id), _id(row.rejected_id))
    return (row.split, row.prompt_id, *ids)


def _texts(row: Row) -> tuple[str, ...]:
    return (row.response,) if isinstance(row, SftRow) else (row.chosen, row.rejected)


def _id(value: int | None) -> int:
    return -1 if value is None else value


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    # Parameters come from forms and JSON: reject booleans (an int subclass) and NaN/inf.
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
