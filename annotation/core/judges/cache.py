"""The key under which a judge's answer to an item is kept: a rerun, or a resumed run,
finds the answer there and never pays for the same call twice."""

from __future__ import annotations

import hashlib
import json

from annotation.core.judges.base import JudgeItem


def item_cache_key(
    *,
    provider: str,
    model: str,
    prompt_version: str,
    temperature: float,
    item: JudgeItem,
    variant: str = "",
) -> str:
    """`variant` keeps apart calls that ask the same thing on purpose (an audit's repeats,
    "repeat:2"): each is paid once, and never answers for another."""
    payload = [
        provider,
        model,
        prompt_version,
        round(float(temperature), 4),
        hashlib.sha256(item.image).hexdigest() if item.image else "",
        item.question,
        list(item.choices),
        item.answer_index,
        item.reference_answer,
        item.hint,
        list(item.completions),
    ]
    if item.more_images or item.turns:  # single-turn keys stay as they were
        payload.append([[hashlib.sha256(data).hexdigest() for data, _ in item.more_images]])
        payload.append(list(item.turns))
    if variant:  # plain keys stay as they were
        payload.append(variant)
    return hashlib.sha256(json.dumps(payload, ensure_ascii=False).encode()).hexdigest()
