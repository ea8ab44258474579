"""What the policy is asked, per task and prompt name, and what a judge_open judge is asked.

ScienceQA prompts: `lmms` is lmms-eval's ScienceQA-IMG prompt; `zero_shot` and `cot` are seed
003's Figures 2 and 3, rendered by the generation templates so that evaluation asks exactly
what generation asked. The text goes to the model unchanged (the generation template
"plain"); the processor's chat template adds the image and the roles.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from training.core.evaluation.data import EvalItem, EvaluationError
from training.core.generation.templates import (
    SHORT_ANSWER_SUFFIX,
    PromptInput,
    render_prompt,
)

# The first name of each task is its default.
PROMPTS: dict[str, tuple[str, ...]] = {
    "scienceqa": ("lmms", "zero_shot", "cot"),
    "pope": ("pope",),
    "judge_open": ("plain",),
    "helpsteer_heldout": ("plain",),
    "noisy_image_text": ("plain",),
    "text_only": ("plain",),
}
REVIEW_PROMPT_DIR = Path(__file__).resolve().parent / "prompts"
DEFAULT_REVIEW_PROMPT = "llava_bench_v1"

_POPE_SUFFIX = SHORT_ANSWER_SUFFIX  # LLaVA's POPE eval
_GENERATION_TEMPLATE = {"lmms": "lmms", "zero_shot": "zero_shot_mc", "cot": "cot_thought"}


def prompt_name(task: str, name: str | None) -> str:
    """`name`, checked against the task's prompts, or the task's default."""
    names = PROMPTS.get(task)
    if names is None:
        raise EvaluationError(f"unknown task {task!r}; tasks are {', '.join(PROMPTS)}")
    if name is None or name == "":
        return names[0]
    if name not in names:
        raise EvaluationError(f"{task} has no prompt {name!r}; prompts are {', '.join(names)}")
    return name


def render(task: str, name: str | None, item: EvalItem) -> str:
    name = prompt_name(task, name)
    if task == "scienceqa":
        prompt = PromptInput(item.question, item.choices, item.hint)
        return render_prompt(_GENERATION_TEMPLATE[name], prompt)
    if task == "pope":
        return item.question + _POPE_SUFFIX
    return item.question


@cache
def review_template(version: str) -> str:
    path = REVIEW_PROMPT_DIR / f"{version}.txt"
    if not path.is_file():
        have = ", ".join(sorted(p.stem for p in REVIEW_PROMPT_DIR.glob("*.txt")))
        raise EvaluationError(f"unknown review prompt {version!r}; have {have}")
    return path.read_text(encoding="utf-8")


def render_review(item: EvalItem, answer: str, *, version: str = DEFAULT_REVIEW_PROMPT) -> str:
    """LLaVA-Bench's review: the reference answer is Assistant 1, the model's Assistant 2."""
    caption = str(item.extra.get("caption") or "")
    context = caption or (
        "(No description: the image is attached.)" if item.image else "(No image.)"
    )
    return review_template(version).format(
        context=context, question=item.question, answer_1=item.answer, answer_2=answer
    )
