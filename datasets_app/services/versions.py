"""Services for dataset versions: read what is rated, run a strategy, freeze the rows.

A version is immutable: its rows (texts, scores, margins) are copied at build time, so
later rating edits never change it; building the same recipe again makes a new version
that can be diffed against the old one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from django.db import transaction
from django.db.models import Max

from annotation.models import ATTRIBUTES, Completion, JudgeConfig, PairPick, Rating, RewardScore
from annotation.services.judging import judge_answers, judge_rewriter
from config.names import safe_name
from datasets_app.core.curation import (
    CurationResult,
    Pick,
    PreferenceRow,
    RatedCompletion,
    RatedPrompt,
    RaterSelection,
    SftRow,
    get_strategy,
    resolve_params,
    row_checksum,
    run_strategy,
)
from datasets_app.models import DatasetRow, DatasetVersion, Prompt
from datasets_app.selectors import prompt_selection_ids
from training.core.generation.templates import PromptInput, render_prompt

CHUNK = 500
HISTOGRAM_BINS = 12


def _rater_key(user_id: int | None, judge_id: int | None, kind: str) -> str:
    if judge_id is not None:
        return f"judge:{judge_id}"
    return f"{'resolution' if kind == Rating.Kind.RESOLUTION else 'user'}:{user_id}"


def rated_prompts(
    *,
    selection: dict[str, Any],
    checkpoint_ids: list[int] | None = None,
    answer_judge_id: int | None = None,
    ask_as: str = "",
) -> Iterator[RatedPrompt]:
    """The selected prompts with their completions, every rating and every pick, as plain
    data. The question is the user turn the completions answered (their prompt template),
    or the one the `ask_as` template makes."""
    prompt_ids = prompt_selection_ids(**selection)
    answer_judge = _answer_judge(answer_judge_id)
    for start in range(0, len(prompt_ids), CHUNK):
        chunk = prompt_ids[start : start + CHUNK]
        completions = Completion.objects.filter(prompt_id__in=chunk).order_by("id")
        if checkpoint_ids:
            completions = completions.filter(checkpoint_id__in=checkpoint_ids)
        rows = list(completions.values("id", "prompt_id", "text", "template", "sampling"))
        ratings: dict[int, dict[str, dict[str, float]]] = {}
        for r in Rating.objects.filter(completion_id__in=[c["id"] for c in rows]).values(
            "completion_id", "user_id", "judge_id", "kind", *ATTRIBUTES
        ):
            key = _rater_key(r["user_id"], r["judge_id"], r["kind"])
            ratings.setdefault(r["completion_id"], {})[key] = {a: r[a] for a in ATTRIBUTES}
        rewards: dict[int, dict[str, float]] = {}
        for completion_id, judge_id, reward in RewardScore.objects.filter(
            completion_id__in=[c["id"] for c in rows]
        ).values_list("completion_id", "judge_id", "reward"):
            rewards.setdefault(completion_id, {})[f"judge:{judge_id}"] = reward
        picks: dict[int, list[Pick]] = {}
        for p in PairPick.objects.filter(prompt_id__in=chunk).values(
            "prompt_id", "annotator_id", "source_id", "chosen_id", "rejected_id", "is_tie"
        ):
            who = f"user:{p['annotator_id']}" if p["annotator_id"] else f"import:{p['source_id']}"
            picks.setdefault(p["prompt_id"], []).append(
                Pick(who, p["chosen_id"], p["rejected_id"], p["is_tie"])
            )
        by_prompt: dict[int, list[dict]] = {}
        for c in rows:
            by_prompt.setdefault(c["prompt_id"], []).append(c)
        chunk_prompts = list(Prompt.objects.filter(pk__in=chunk).order_by("id"))
        answers = judge_answers(config=answer_judge, prompts=chunk_prompts) if answer_judge else {}
        for prompt in chunk_prompts:
            mine = by_prompt.get(prompt.pk, [])
            template = Counter(c["template"] for c in mine).most_common(1)
            asked = template[0][0] if template else "plain"
            question = render_prompt(
                # Prompts with options keep theirs: reference_sft asks them seed 000's way.
                ask_as if ask_as and not prompt.choices else asked,
                PromptInput(prompt.question, tuple(prompt.choices), prompt.hint),
            )
            yield RatedPrompt(
                prompt_id=prompt.pk,
                source_id=prompt.source_id,
                question=question,
                completions=tuple(
                    RatedCompletion(
                        c["id"],
                        c["text"],
                        ratings.get(c["id"], {}),
                        method=str((c["sampling"] or {}).get("method", "")),
                        rewards=rewards.get(c["id"], {}),
                    )
                    for c in mine
                ),
                picks=tuple(picks.get(prompt.pk, ())),
                choices=tuple(prompt.choices),
                answer_index=prompt.answer_index,
                hint=prompt.hint,
                reference_answer=prompt.reference_answer,
                has_image=bool(prompt.image),
                split=prompt.split,
                metadata={**prompt.metadata, **_answer(answers, prompt.pk)},
            )


def _answer_judge(judge_id: int | None) -> JudgeConfig | None:
    if judge_id is None:
        return None
    config = JudgeConfig.objects.filter(pk=judge_id).first()
    if config is None:
        raise ValueError(f"no judge #{judge_id} whose answers to train on")
    return config


def _answer(answers: dict[int, str], prompt_id: int) -> dict[str, str]:
    return {"judge_answer": answers[prompt_id]} if answers.get(prompt_id) else {}


def _histogram(values: list[float], bins: int = HISTOGRAM_BINS) -> dict[str, list]:
    if not values:
        return {"edges": [], "counts": []}
    low, high = min(values), max(values)
    width = (high - low) / bins or 1.0
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, int((v - low) / width))] += 1
    return {"edges": [round(low + i * width, 3) for i in range(bins + 1)], "counts": counts}


def version_stats(result: CurationResult, source_of: dict[int, int]) -> dict[str, Any]:
    rows = result.rows
    splits = Counter(r.split for r in rows)
    per_source = Counter(str(source_of.get(r.prompt_id)) for r in rows)
    stats: dict[str, Any] = {
        "rows": len(rows),
        "splits": dict(splits),
        "prompts": len({r.prompt_id for r in rows}),
        "per_source": dict(per_source),
        "dropped": result.dropped,
    }
    if result.kind == "dpo":
        pairs = [r for r in rows if isinstance(r, PreferenceRow)]
        stats["margin_histogram"] = _histogram([r.margin for r in pairs])
        stats["chosen_chars"] = _histogram([float(len(r.chosen)) for r in pairs])
        stats["rejected_chars"] = _histogram([float(len(r.rejected)) for r in pairs])
    else:
        stats["response_chars"] = _histogram(
            [float(len(r.response)) for r in rows if isinstance(r, SftRow)]
        )
    return stats


def _frozen(version: DatasetVersion, result: CurationResult) -> list[DatasetRow]:
    positions: Counter[str] = Counter()
    frozen = []
    for row in result.rows:
        position = positions[row.split]
        positions[row.split] += 1
        if isinstance(row, PreferenceRow):
            fields = {
                "question": row.question,
                "chosen": row.chosen,
                "rejected": row.rejected,
                "chosen_completion_id": row.chosen_id,
                "rejected_completion_id": row.rejected_id,
                "chosen_scores": row.chosen_scores,
                "rejected_scores": row.rejected_scores,
                "margin": row.margin,
            }
        else:
            fields = {
                "question": row.question,
                "chosen": row.response,
                "chosen_completion_id": row.completion_id,
                "chosen_scores": row.scores,
                "label": row.label,
            }
        frozen.append(
            DatasetRow(
                version=version,
                split=row.split,
                position=position,
                prompt_id=row.prompt_id,
                rater=row.rater[:300],
                **fields,
            )
        )
    return frozen


def curation_preview(
    *,
    strategy: str,
    params: dict[str, Any] | None,
    rater_selection: dict[str, Any],
    filters: dict[str, Any] | None,
    selection: dict[str, Any],
    checkpoint_ids: list[int] | None = None,
    seed: int = 0,
    rewrite_judge_id: int | None = None,
    answer_judge_id: int | None = None,
) -> tuple[CurationResult, dict[int, int]]:
    """Run a recipe without saving it: the rows and the source of each prompt."""
    get_strategy(strategy)
    run_params = dict(params or {})
    rewrite = _rewriter(rewrite_judge_id)
    if rewrite is not None:
        run_params["rewrite"] = rewrite
    resolved = resolve_params(strategy, run_params)  # bad parameters fail before any query
    prompts = list(
        rated_prompts(
            selection=selection,
            checkpoint_ids=checkpoint_ids,
            answer_judge_id=answer_judge_id,
            ask_as=resolved.get("ask_as", ""),
        )
    )
    result = run_strategy(
        strategy,
        prompts,
        resolved,
        RaterSelection.from_dict(rater_selection),
        filters or {},
        seed,
    )
    return result, {p.prompt_id: p.source_id for p in prompts}


def _rewriter(judge_id: int | None) -> Callable[[str], str] | None:
    if judge_id is None:
        return None
    config = JudgeConfig.objects.filter(pk=judge_id).first()
    if config is None:
        raise ValueError(f"no judge #{judge_id} to rewrite with")
    return judge_rewriter(config)


def dataset_version_build(
    *,
    name: str,
    strategy: str,
    params: dict[str, Any] | None = None,
    rater_selection: dict[str, Any] | None = None,
    filters: dict[str, Any] | None = None,
    selection: dict[str, Any] | None = None,
    checkpoint_ids: list[int] | None = None,
    seed: int = 0,
    rewrite_judge_id: int | None = None,
    answer_judge_id: int | None = None,
    user: Any = None,
) -> DatasetVersion:
    """Build the next version of `name` from a recipe, and freeze its rows.

    `answer_judge_id`: whose own answers `judge_answer_sft` trains on; `rewrite_judge_id`:
    which judge rewrites long responses for `scienceqa_reformatted`."""
    name = safe_name(name, "dataset name")
    rater_selection = rater_selection or {}
    selection = selection or {}
    result, source_of = curation_preview(
        strategy=strategy,
        params=params,
        rater_selection=rater_selection,
        filters=filters,
        selection=selection,
        checkpoint_ids=checkpoint_ids,
        seed=seed,
        rewrite_judge_id=rewrite_judge_id,
        answer_judge_id=answer_judge_id,
    )
    if not result.rows:
        reasons = ", ".join(f"{k}: {v}" for k, v in result.dropped.items()) or "no prompts"
        raise ValueError(f"the recipe makes no rows ({reasons})")
    # The rewrite function itself cannot be stored; the selection records its judge.
    recorded = {k: v for k, v in result.params.items() if not callable(v)}
    with transaction.atomic():
        latest = DatasetVersion.objects.filter(name=name).aggregate(v=Max("version"))["v"]
        version = DatasetVersion.objects.create(
            name=name,
            version=(latest or 0) + 1,
            kind=result.kind,
            status=DatasetVersion.Status.READY,
            strategy=strategy,
            params=recorded,
            rater_selection=RaterSelection.from_dict(rater_selection).to_dict(),
            filters=filters or {},
            selection={
                **selection,
                "checkpoint_ids": checkpoint_ids or [],
                "answer_judge_id": answer_judge_id,
                "rewrite_judge_id": rewrite_judge_id,
            },
            seed=seed,
            row_count=len(result.rows),
            stats=version_stats(result, source_of),
            checksum=row_checksum(result.rows),
            created_by=user,
        )
        DatasetRow.objects.bulk_create(_frozen(version, result), batch_size=1000)
        version.sources.set(sorted(set(source_of.values())))
    return version


def _row_key(row: DatasetRow) -> tuple:
    return (
        row.prompt_id,
        row.chosen_completion_id or row.chosen,
        row.rejected_completion_id or row.rejected,
    )


def dataset_versions_diff(old: DatasetVersion, new: DatasetVersion) -> dict[str, Any]:
    """Rows added, removed and changed (same prompt and answers, other scores or split)."""

    def rows(version: DatasetVersion) -> dict[tuple, DatasetRow]:
        return {_row_key(r): r for r in version.rows.all()}

    a, b = rows(old), rows(new)
    changed = [
        key
        for key in a.keys() & b.keys()
        if (a[key].split, a[key].chosen_scores, a[key].rejected_scores, a[key].margin)
        != (b[key].split, b[key].chosen_scores, b[key].rejected_scores, b[key].margin)
    ]
    return {
        "added": [b[k] for k in sorted(b.keys() - a.keys(), key=str)],
        "removed": [a[k] for k in sorted(a.keys() - b.keys(), key=str)],
        "changed": [(a[k], b[k]) for k in sorted(changed, key=str)],
        "unchanged": len(a.keys() & b.keys()) - len(changed),
    }
