"""Pure evaluation core (no Django): benchmark files in, per-item records and metrics out.

`load_items` reads a local ScienceQA / POPE / open-ended / held-out file, `evaluate` asks a
policy (any `generate` callable; `transformers_generate` for a checkpoint) and, for the judged
tasks, a judge, and `bootstrap_diff` compares two runs item by item.
"""

from training.core.evaluation.data import TASKS, EvalItem, EvaluationError, load_items
from training.core.evaluation.metrics import (
    bootstrap_diff,
    compute_metrics,
    headline_metrics,
    item_scores,
    metric_value,
)
from training.core.evaluation.prompts import PROMPTS, render, render_review
from training.core.evaluation.runner import (
    EvaluationResult,
    backend_generate,
    evaluate,
    transformers_generate,
)
from training.core.evaluation.specs import parse_evaluation_specs

__all__ = [
    "PROMPTS",
    "TASKS",
    "EvalItem",
    "EvaluationError",
    "EvaluationResult",
    "backend_generate",
    "bootstrap_diff",
    "compute_metrics",
    "evaluate",
    "headline_metrics",
    "item_scores",
    "load_items",
    "metric_value",
    "parse_evaluation_specs",
    "render",
    "render_review",
    "transformers_generate",
]
