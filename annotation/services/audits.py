"""Judge audits (issue 18.2): rate a sample of items again in reverse order and N times
over, through the same runner, cache and cost table as any judging; measure position bias,
self-consistency and parse failures (annotation/core/judges/audit.py); keep the result as
the judge's reliability card.

Every call is a JudgeCall under its own cache key (a reversed item differs in the order of
its completions; a repeat carries "repeat:R"), so a second audit of the same items pays
nothing, and the plain order is the very call that judging makes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from django.db import transaction

from annotation.core.judges import audit
from annotation.core.judges.base import ATTRIBUTES, JudgeItem, Usage
from annotation.core.judges.pricing import cost_usd, price_for
from annotation.core.judges.runner import ItemOutcome, RunLimits, estimate_tokens, run_items
from annotation.models import JudgeAudit, JudgeCall, JudgeConfig, Rating
from annotation.services.judging import (
    _groups,
    _item,
    build_judge,
    judge_cache_key,
    judge_config_check,
    judge_result_json,
)
from datasets_app.models import Prompt
from datasets_app.selectors import prompt_selection_ids

OUTPUT_TOKENS_PER_COMPLETION = 150  # the runner's estimate of a rating's length


@dataclass(frozen=True)
class _Call:
    group: int  # which item of the sample
    kind: str  # "plain", "reversed" or "repeat"
    item: JudgeItem
    prompt: Prompt
    completion_ids: tuple[int, ...]
    cache_key: str
    order: tuple[int, ...] = ()


def _calls(
    config: JudgeConfig, groups: list[tuple[Prompt, list[Any]]], position: bool, repeats: int
) -> list[_Call]:
    calls: list[_Call] = []
    for g, (prompt, completions) in enumerate(groups):
        item = _item(prompt, completions)
        ids = tuple(c.pk for c in completions)
        calls.append(_Call(g, "plain", item, prompt, ids, judge_cache_key(config, item)))
        if position and len(completions) >= 2:
            order = audit.reversed_order(len(completions))
            turned = audit.permuted_item(item, order)
            shown = tuple(ids[i] for i in order)
            calls.append(
                _Call(g, "reversed", turned, prompt, shown, judge_cache_key(config, turned), order)
            )
        for r in range(1, repeats):
            again = replace(item, key=f"{item.key}|repeat:{r}")
            calls.append(
                _Call(g, "repeat", again, prompt, ids, judge_cache_key(config, item, f"repeat:{r}"))
            )
    return calls


def estimate_cost(config: JudgeConfig, calls: list[_Call]) -> float:
    """What the calls would cost at the judge's price, from the runner's token estimate."""
    total = 0.0
    for call in calls:
        out = OUTPUT_TOKENS_PER_COMPLETION * len(call.item.completions)
        total += cost_usd(config.model, Usage(estimate_tokens(call.item) - out, out))
    return total


def judge_audit(
    *,
    judge_config: JudgeConfig,
    selection: dict[str, Any],
    position: bool = True,
    repeats: int = 1,
    k_per_call: int = 4,
    max_cost: float | None = None,
    limits: RunLimits | None = None,
    debias: bool = False,
    user: Any = None,
) -> JudgeAudit:
    """Audit a judge on the selected prompts' completions (K per call) and keep the card.
    Refuses, before any call, an audit with nothing to measure or one whose estimated cost
    passes `max_cost`; the run itself stops at `max_cost` too."""
    if not position and repeats < 2:
        raise ValueError("nothing to measure: ask --position, or --repeats of 2 or more")
    if debias and not position:
        raise ValueError("--debias averages over orders: it needs --position")
    if not 1 <= repeats <= 20:
        raise ValueError("repeats must be between 1 and 20")
    if judge_config.provider == "reward":
        raise ValueError("a reward model gives no HelpSteer scores: audit a rating judge")
    judge_config_check(
        provider=judge_config.provider, model=judge_config.model, base_url=judge_config.base_url
    )
    judge = build_judge(judge_config)
    prompt_ids = prompt_selection_ids(**selection)
    groups = list(_groups(prompt_ids, None, k_per_call))
    groups = [(p, cs) for p, cs in groups if cs]
    if not groups:
        raise ValueError("no selected prompt has completions to audit")
    calls = _calls(judge_config, groups, position, repeats)
    cached = dict(
        JudgeCall.objects.filter(
            cache_key__in={c.cache_key for c in calls}, status=JudgeCall.Status.OK
        ).values_list("cache_key", "result")
    )
    todo = {c.item.key: c for c in calls if c.cache_key not in cached}
    estimate = estimate_cost(judge_config, list(todo.values()))
    if max_cost is not None and estimate > max_cost:
        raise ValueError(
            f"the audit would make {len(todo)} calls, about ${estimate:.4f} at "
            f"{judge_config.model}'s price: over --max-cost ${max_cost:g}"
        )
    results = dict(cached)
    failed: set[str] = set()
    spent = {"calls": 0, "cost_usd": 0.0}

    def record(outcome: ItemOutcome) -> None:
        call = todo[outcome.item.key]
        row = JudgeCall(
            judge=judge_config,
            prompt=call.prompt,
            completion_ids=list(call.completion_ids),
            cache_key=call.cache_key,
            raw_response=outcome.raw,
            attempts=outcome.attempts,
            input_tokens=outcome.usage.input_tokens,
            output_tokens=outcome.usage.output_tokens,
            cost_usd=outcome.cost_usd,
        )
        spent["calls"] += outcome.attempts
        spent["cost_usd"] += outcome.cost_usd
        if outcome.result is None:
            row.status, row.error = JudgeCall.Status.FAILED, outcome.error
            failed.add(call.cache_key)
        else:
            row.status = JudgeCall.Status.OK
            row.result = judge_result_json(outcome.result)
            results[call.cache_key] = row.result
        with transaction.atomic():
            row.save()

    limits = replace(limits or RunLimits(), max_cost_usd=max_cost)
    run_items(
        judge,
        (c.item for c in todo.values()),
        limits,
        on_outcome=record,
        price=lambda usage: cost_usd(judge_config.model, usage),
    )
    result = _measure(calls, results, failed)
    if debias:
        result["debiased"] = _debias(judge_config, calls, results)
    result.update(
        calls=spent["calls"],
        cached_calls=len(calls) - len(todo),
        cost_usd=round(spent["cost_usd"], 6),
        estimated_cost_usd=round(estimate, 6),
        priced=price_for(judge_config.model) is not None,
    )
    params = {
        "selection": selection,
        "position": position,
        "repeats": repeats,
        "k_per_call": k_per_call,
        "max_cost": max_cost,
        "debias": debias,
    }
    return JudgeAudit.objects.create(
        judge=judge_config, params=params, result=result, created_by=user
    )


def _scores(result: dict[str, Any] | None) -> list[dict[str, float]] | None:
    if not result:
        return None
    return [{a: float(r[a]) for a in ATTRIBUTES} for r in result["ratings"]]


def _measure(
    calls: list[_Call], results: dict[str, dict[str, Any]], failed: set[str]
) -> dict[str, Any]:
    by_group: dict[int, dict[str, list[_Call]]] = {}
    for call in calls:
        by_group.setdefault(call.group, {}).setdefault(call.kind, []).append(call)
    pairs, repeats = [], []
    for kinds in by_group.values():
        plain = _scores(results.get(kinds["plain"][0].cache_key))
        for turned in kinds.get("reversed", []):
            scores = _scores(results.get(turned.cache_key))
            if plain is not None and scores is not None:
                pairs.append((plain, audit.mapped_back(scores, turned.order)))
        runs = [plain, *(_scores(results.get(c.cache_key)) for c in kinds.get("repeat", []))]
        done = [r for r in runs if r is not None]
        if len(done) >= 2:
            repeats.append(done)
    position = audit.position_bias(pairs)
    asked = len({c.cache_key for c in calls})
    return {
        "items": len(by_group),
        "position_flip_rate": position.flip_rate if pairs else None,
        "mean_abs_delta": position.mean_abs_delta,
        "self_alpha": audit.self_consistency(repeats),
        "parse_failure_rate": len(failed) / asked if asked else None,
        "best_flips": position.best_flips,
        "worst_flips": position.worst_flips,
        "position_items": position.items,
        "repeat_items": len(repeats),
    }


def _debias(config: JudgeConfig, calls: list[_Call], results: dict[str, Any]) -> int:
    """Store, as the judge's rating of each completion, the mean of its scores over the
    orders asked (rounded half up to the 0-4 scale); returns how many were written."""
    by_group: dict[int, dict[str, _Call]] = {}
    for call in calls:
        by_group.setdefault(call.group, {}).setdefault(call.kind, call)
    written = 0
    for kinds in by_group.values():
        plain, turned = kinds.get("plain"), kinds.get("reversed")
        if plain is None or turned is None:
            continue
        first, second = (
            _scores(results.get(plain.cache_key)),
            _scores(results.get(turned.cache_key)),
        )
        if first is None or second is None:
            continue
        back = audit.mapped_back(second, turned.order)
        with transaction.atomic():
            for completion_id, x, y in zip(plain.completion_ids, first, back, strict=True):
                Rating.objects.update_or_create(
                    completion_id=completion_id,
                    judge=config,
                    defaults={
                        **{a: int((x[a] + y[a]) / 2 + 0.5) for a in ATTRIBUTES},
                        "reasoning": "debiased: the mean of its scores in 2 orders",
                        "job": None,
                    },
                )
                written += 1
    return written


JSON_KEYS = ("items", "position_flip_rate", "mean_abs_delta", "self_alpha", "parse_failure_rate")


def audit_json(audit_row: JudgeAudit) -> dict[str, Any]:
    """The `judge_audit --json` object: exactly the issue's fields."""
    return {key: audit_row.result.get(key) for key in JSON_KEYS}
