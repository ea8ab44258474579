"""Pure curation core: rated prompts in, dataset rows out. No Django (a test checks)."""

from datasets_app.core.curation.filters import FILTER_KEYS, apply_filters, check_filters, split_of
from datasets_app.core.curation.raters import RaterSelection, combined_scores
from datasets_app.core.curation.strategies import (
    REFORMAT_TEMPLATE,
    STRATEGIES,
    Strategy,
    get_strategy,
    parse_steerlm_label,
    resolve_params,
    row_checksum,
    run_strategy,
    scienceqa_prompt,
    scienceqa_response,
    score_sum,
    steerlm_label,
)
from datasets_app.core.curation.types import (
    ATTRIBUTES,
    CurationResult,
    Pick,
    PreferenceRow,
    RatedCompletion,
    RatedPrompt,
    Scores,
    SftRow,
)

__all__ = [
    "ATTRIBUTES",
    "FILTER_KEYS",
    "REFORMAT_TEMPLATE",
    "STRATEGIES",
    "CurationResult",
    "Pick",
    "PreferenceRow",
    "RatedCompletion",
    "RatedPrompt",
    "RaterSelection",
    "Scores",
    "SftRow",
    "Strategy",
    "apply_filters",
    "check_filters",
    "combined_scores",
    "get_strategy",
    "parse_steerlm_label",
    "resolve_params",
    "row_checksum",
    "run_strategy",
    "scienceqa_prompt",
    "scienceqa_response",
    "score_sum",
    "split_of",
    "steerlm_label",
]
