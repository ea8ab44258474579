"""Metrics from per-item records (the dicts the runner writes), and the bootstrap.

Accuracy-like metrics are fractions in [0, 1]; judge_open's relative score is a percentage
(100 x mean model score / mean reference score), as LLaVA-Bench reports it. A group with no
items is left out of a breakdown rather than reported as 0.

Every record carries a numeric `score` (None when a judge gave nothing usable) whose mean
over items is the task's first headline metric where it can be (accuracy; the mean judge
score): `bootstrap_diff` on `item_scores` compares two runs on that.

ScienceQA and POPE are scored three ways. The top level is this project's lenient reading
(parsing.py: "The answer is X", "(X)", "Yes, there is"); it is the headline, and the
per-item `score` the paired bootstrap compares stays on it. Beside it, sub-dicts named for
the published scorer whose rules they follow, so that a number can be set against a
published table: `llava` (POPE, LLaVA's llava/eval/eval_pope.py) and `lmms_eval` (POPE and
ScienceQA, lmms-eval's tasks/pope/utils.py and tasks/scienceqa/utils.py), read from each
record's raw answers. `SCORERS` says which is which, for the pages.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from annotation.core.judges.base import ATTRIBUTES
from training.core.evaluation.parsing import (
    parse_choice_strict,
    parse_yes_no_exact,
    parse_yes_no_llava,
)

SUBJECT_ORDER = ("NAT", "SOC", "LAN")
CONTEXT_ORDER = ("IMG", "TXT", "NO")
POPE_ORDER = ("random", "popular", "adversarial")

# The numbers a run is summed up by, as paths into its metrics dict.
HEADLINE: dict[str, tuple[str, ...]] = {
    "scienceqa": ("accuracy",),
    "pope": ("f1", "accuracy"),
    "judge_open": ("relative_score",),
    "helpsteer_heldout": ("helpfulness",),
    "noisy_image_text": ("by_image.blank.helpfulness", "by_image.noise.helpfulness"),
    "text_only": ("by_image.none.helpfulness",),
}

Record = Mapping[str, Any]


@dataclass(frozen=True)
class Scorer:
    """One way of scoring a task: where its numbers sit in the metrics ("" for the top
    level), the name it goes by on the pages, and how it reads an answer."""

    path: str
    label: str
    rule: str
    unread: str  # its count of the answers it could not read


SCORERS: dict[str, tuple[Scorer, ...]] = {
    "scienceqa": (
        Scorer(
            "",
            "lenient (headline)",
            'after LLaVA\'s eval_science_qa.py: "The answer is X" (the last one), "(X)", a'
            " bare letter in either case, or a letter that opens the answer",
            "parse_failures",
        ),
        Scorer(
            "lmms_eval",
            "lmms-eval (strict)",
            'exact match: the letter in either case, or "X." at the start; "The answer is X"'
            ' and "(X)" are wrong',
            "parse_failures",
        ),
    ),
    "pope": (
        Scorer(
            "",
            "lenient (headline)",
            'the answer starts with yes or no ("Yes, there is"); anything else is unparsed'
            " and wrong",
            "parse_failures",
        ),
        Scorer(
            "llava",
            "LLaVA eval_pope.py",
            'the first sentence decides: "No", "no" or "not" means no, anything else yes;'
            ' unparsed counts the yes that were only that default (no "yes" either)',
            "unparsed",
        ),
        Scorer(
            "lmms_eval",
            "lmms-eval (strict)",
            'exact match of the lower-cased answer ("Yes." is wrong); recall misses only an'
            " exact \"no\"; yes-ratio is the model's (lmms-eval prints the truth's, here"
            " gold_yes_ratio)",
            "parse_failures",
        ),
    ),
}
SCORER_COLUMNS = ("accuracy", "precision", "recall", "f1", "yes_ratio")

# The published scorers' numbers the comparison shows beside the headline: (path, label).
PUBLISHED: dict[str, tuple[tuple[str, str], ...]] = {
    "scienceqa": (("lmms_eval.accuracy", "accuracy · lmms-eval"),),
    "pope": (
        ("lmms_eval.f1", "f1 · lmms-eval"),
        ("lmms_eval.accuracy", "accuracy · lmms-eval"),
        ("llava.f1", "f1 · LLaVA"),
        ("llava.unparsed", "default yes · LLaVA"),
    ),
}


def scorer_rows(task: str, metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A row per scorer of `task` that the metrics hold: its Scorer, its values of
    SCORER_COLUMNS (None where it has none) and its count of unread answers. Empty where
    only the headline is there (another task; a run stored before these existed)."""
    rows = []
    for scorer in SCORERS.get(task, ()):
        values = metrics.get(scorer.path) if scorer.path else metrics
        if isinstance(values, Mapping):
            rows.append(
                {
                    "scorer": scorer,
                    "values": [metric_value(values, c) for c in SCORER_COLUMNS],
                    "unread": values.get(scorer.unread),
                }
            )
    return rows if len(rows) > 1 else []


def headline_metrics(task: str) -> tuple[str, ...]:
    return HEADLINE[task]


def metric_value(metrics: Mapping[str, Any], path: str) -> float | None:
    """A metric by dotted path ("by_image.noise.helpfulness"); None when it is absent."""
    value: Any = metrics
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return float(value) if isinstance(value, int | float) else None


def item_scores(records: Iterable[Record]) -> dict[str, float]:
    """key -> score, for the bootstrap; records without a score (judge failures) left out."""
    return {str(r["key"]): float(r["score"]) for r in records if r.get("score") is not None}


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _grouped(
    records: Sequence[Record],
    field: str,
    order: Sequence[str],
    summarise: Callable[[Sequence[Record]], dict[str, Any]],
) -> dict[str, dict[str, Any]]:
    """`summarise` per value of `field`: known values in `order` first, then the others."""
    groups: dict[str, list[Record]] = {}
    for r in records:
        if r.get(field):
            groups.setdefault(str(r[field]), []).append(r)
    names = [g for g in order if g in groups] + sorted(g for g in groups if g not in order)
    return {g: summarise(groups[g]) for g in names}


def _samples(records: Sequence[Record]) -> int:
    return max((len(r["answers"]) for r in records), default=0)


# --- multiple choice ----------------------------------------------------------------------------


def _accuracy(records: Sequence[Record]) -> dict[str, Any]:
    return {
        "n": len(records),
        # Each sample scored, then averaged: the expected accuracy of one sample.
        "accuracy": _mean([float(r["score"]) for r in records]),
        "majority_accuracy": _mean([float(r["majority_correct"]) for r in records]),
        "lmms_eval": _lmms_eval_choice(records),
    }


def _lmms_eval_choice(records: Sequence[Record]) -> dict[str, Any]:
    """lmms-eval's ScienceQA exact match (`sqa_process_results`): a bare letter or "X." at
    the start is read, "The answer is X" and "(X)" are wrong. Averaged like `accuracy`."""
    scores, unread = [], 0
    for r in records:
        letters = [parse_choice_strict(a) for a in r["answers"]]
        unread += letters.count(None)
        scores.append(sum(p == r["gold"] for p in letters) / len(letters))
    return {"accuracy": _mean(scores), "parse_failures": unread}


def scienceqa_metrics(records: Sequence[Record]) -> dict[str, Any]:
    return {
        **_accuracy(records),
        "samples": _samples(records),
        "parse_failures": sum(r["parsed"].count(None) for r in records),
        "by_subject": _grouped(records, "subject", SUBJECT_ORDER, _accuracy),
        "by_context": _grouped(records, "context", CONTEXT_ORDER, _accuracy),
    }


# --- yes / no -----------------------------------------------------------------------------------


def _pope_scores(records: Sequence[Record]) -> dict[str, Any]:
    """Over every sample of every item. A parse failure is wrong and never a "yes": it
    lowers accuracy, and recall too when the truth is yes, but never precision."""
    tp = fp = predicted = total = 0
    gold_yes = 0
    for r in records:
        for p in r["parsed"]:
            total += 1
            gold_yes += r["gold"] == "yes"
            if p is not None:
                predicted += 1
            if p == "yes":
                tp += r["gold"] == "yes"
                fp += r["gold"] == "no"
    correct = sum(sum(r["correct"]) for r in records)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / gold_yes if gold_yes else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "n": len(records),
        "accuracy": correct / total if total else None,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        # What the model says, not the truth's 50% (lmms-eval reports the latter by mistake).
        "yes_ratio": (tp + fp) / total if total else None,
        "majority_accuracy": _mean([float(r["majority_correct"]) for r in records]),
        "parse_failures": total - predicted,
        "llava": _llava_pope(records),
        "lmms_eval": _lmms_eval_pope(records),
    }


def _yes_no_scores(pairs: Sequence[tuple[str | None, str]]) -> dict[str, Any]:
    """Accuracy, precision, recall, F1 and the predicted yes-ratio over (said, truth)
    pairs, as both published scorers count them: a false negative is a "no" to a yes
    question, so an answer read as neither (None) is wrong but leaves recall alone."""
    tp = sum(p == "yes" and g == "yes" for p, g in pairs)
    fp = sum(p == "yes" and g == "no" for p, g in pairs)
    fn = sum(p == "no" and g == "yes" for p, g in pairs)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "accuracy": _mean([float(p == g) for p, g in pairs]),
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "yes_ratio": (tp + fp) / len(pairs) if pairs else None,
    }


def _llava_pope(records: Sequence[Record]) -> dict[str, Any]:
    """Exactly LLaVA's eval_pope.py, which calls every answer without "No"/"no"/"not" in
    its first sentence a yes; `unparsed` counts how many of those yes were only that
    default (no "yes" in the sentence either), so that the reader sees how much of the
    yes-ratio is real. Where LLaVA would divide by zero (no yes at all) we report 0."""
    said = [(parse_yes_no_llava(a), str(r["gold"])) for r in records for a in r["answers"]]
    pairs = [(p or "yes", g) for p, g in said]
    return {**_yes_no_scores(pairs), "unparsed": sum(p is None for p, _ in said)}


def _lmms_eval_pope(records: Sequence[Record]) -> dict[str, Any]:
    """lmms-eval's POPE: exact match of the lower-cased, stripped answer ("Yes." is wrong);
    a false negative only where the answer is exactly "no", so an unreadable answer to a
    yes question leaves recall alone. lmms-eval's own yes-ratio is the truth's
    (`gold_yes_ratio` here, ~0.5 on POPE); `yes_ratio` is what the model said."""
    pairs = [(parse_yes_no_exact(a), str(r["gold"])) for r in records for a in r["answers"]]
    return {
        **_yes_no_scores(pairs),
        "gold_yes_ratio": _mean([float(g == "yes") for _, g in pairs]),
        "parse_failures": sum(p is None for p, _ in pairs),
    }


def pope_metrics(records: Sequence[Record]) -> dict[str, Any]:
    return {
        **_pope_scores(records),
        "samples": _samples(records),
        "by_category": _grouped(records, "category", POPE_ORDER, _pope_scores),
    }


# --- judged -------------------------------------------------------------------------------------


def _judgements(records: Sequence[Record]) -> list[Mapping[str, Any]]:
    return [j for r in records for j in r["judgements"]]


def _usage(records: Sequence[Record]) -> dict[str, int]:
    return {
        "judge_input_tokens": sum(r["judge_usage"]["input_tokens"] for r in records),
        "judge_output_tokens": sum(r["judge_usage"]["output_tokens"] for r in records),
    }


def _review_scores(records: Sequence[Record]) -> dict[str, Any]:
    """LLaVA-Bench: the ratio of means over every judged answer; failures left out."""
    judged = [j for j in _judgements(records) if j["model_score"] is not None]
    model = _mean([j["model_score"] for j in judged])
    reference = _mean([j["reference_score"] for j in judged])
    relative = 100 * model / reference if model is not None and reference else None
    return {
        "n": len(records),
        "judged": len(judged),
        "judge_failures": len(_judgements(records)) - len(judged),
        "model_score": model,
        "reference_score": reference,
        "relative_score": relative,
    }


def judge_open_metrics(records: Sequence[Record]) -> dict[str, Any]:
    return {
        **_review_scores(records),
        "samples": _samples(records),
        **_usage(records),
        "by_category": _grouped(records, "category", (), _review_scores),
    }


def _attribute_means(records: Sequence[Record]) -> dict[str, Any]:
    rated = [j["ratings"] for j in _judgements(records) if j["ratings"] is not None]
    return {
        "n": len(records),
        "rated": len(rated),
        "judge_failures": len(_judgements(records)) - len(rated),
        **{a: _mean([float(r[a]) for r in rated]) for a in ATTRIBUTES},
    }


def helpsteer_metrics(records: Sequence[Record]) -> dict[str, Any]:
    return {**_attribute_means(records), "samples": _samples(records), **_usage(records)}


def noisy_image_metrics(records: Sequence[Record]) -> dict[str, Any]:
    return {
        **helpsteer_metrics(records),
        "by_image": _grouped(records, "image_kind", IMAGE_KIND_ORDER, _attribute_means),
    }


# noisy_image_text's kinds, and text_only's "none": one table, one column each.
IMAGE_KIND_ORDER = ("none", "blank", "noise")


_METRICS: dict[str, Callable[[Sequence[Record]], dict[str, Any]]] = {
    "scienceqa": scienceqa_metrics,
    "pope": pope_metrics,
    "judge_open": judge_open_metrics,
    "helpsteer_heldout": helpsteer_metrics,
    "noisy_image_text": noisy_image_metrics,
    "text_only": noisy_image_metrics,
}


def compute_metrics(task: str, records: Sequence[Record]) -> dict[str, Any]:
    return _METRICS[task](records)


# --- comparing two runs -------------------------------------------------------------------------

_BLOCK = 200  # resamples drawn at once: bounds memory at 200 x n indices


def bootstrap_diff(
    a: Mapping[str, float],
    b: Mapping[str, float],
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """mean(b) - mean(a) with a percentile bootstrap interval.

    Paired when both runs scored the same item keys: items are resampled together, so
    that item difficulty cancels out. Otherwise (a run stopped early, other files) each
    run is resampled on its own, and the interval is wider.
    """
    import numpy as np

    if not a or not b:
        raise ValueError("both runs need at least one scored item")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, not {n_resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, not {confidence}")
    rng = np.random.default_rng(seed)
    paired = set(a) == set(b)
    if paired:
        keys = sorted(a)  # a fixed order, so the seed alone decides the resamples
        delta = np.array([b[k] - a[k] for k in keys], dtype=float)
        diff = float(delta.mean())
        draws = _resampled_means(delta, n_resamples, rng)
    else:
        va = np.array([a[k] for k in sorted(a)], dtype=float)
        vb = np.array([b[k] for k in sorted(b)], dtype=float)
        diff = float(vb.mean() - va.mean())
        draws = _resampled_means(vb, n_resamples, rng) - _resampled_means(va, n_resamples, rng)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return {
        "diff": diff,
        "low": float(low),
        "high": float(high),
        "paired": paired,
        "n": len(set(a) & set(b)),  # items both runs scored
        "n_a": len(a),
        "n_b": len(b),
        "confidence": confidence,
        "n_resamples": n_resamples,
    }


def _resampled_means(values: Any, n_resamples: int, rng: Any) -> Any:
    import numpy as np

    out = np.empty(n_resamples)
    n = len(values)
    for start in range(0, n_resamples, _BLOCK):
        stop = min(start + _BLOCK, n_resamples)
        out[start:stop] = values[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    return out


def flatten_metrics(metrics: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested metrics as (dotted name, value) rows, in their order, for a table."""
    rows: list[tuple[str, Any]] = []
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            rows += flatten_metrics(value, f"{name}.")
        else:
            rows.append((name, value))
    return rows
