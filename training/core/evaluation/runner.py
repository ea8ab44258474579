"""Run a task: ask the policy, read or judge its answers, score each item, sum up.

The policy is a plain callable, `generate(inputs, samples) -> answers`, one list of `samples`
texts per `(key, prompt text, image)` input, so that the runner can be tested with scripted
answers; `transformers_generate` builds it from a loaded checkpoint. Items go in chunks, so
that progress is reported and a stop request is honoured between chunks. Judges are called
through the judging runner (concurrent, rate limited, retried; an answer that cannot be read
is asked again, then recorded as a failure and left out of the means).
"""

from __future__ import annotations

import io
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from annotation.core.judges.base import (
    ATTRIBUTES,
    InvalidJudgeOutput,
    Judge,
    JudgeItem,
    JudgeResult,
    TextResult,
)
from annotation.core.judges.runner import ItemOutcome, RunLimits, run_items
from training.core.evaluation.data import TASKS, EvalItem, EvaluationError
from training.core.evaluation.metrics import compute_metrics
from training.core.evaluation.parsing import (
    LETTERS,
    parse_choice,
    parse_review_scores,
    parse_yes_no,
)
from training.core.evaluation.prompts import (
    DEFAULT_REVIEW_PROMPT,
    prompt_name,
    render,
    render_review,
    review_template,
)

if TYPE_CHECKING:
    from PIL import Image

    from training.core.generation.core import GenerationBackend
    from training.core.modeling import LoadedPolicy

GenerateInput = tuple[str, str, "Image.Image | None"]  # (key, prompt text, image)
GenerateFn = Callable[[list[GenerateInput], int], list[list[str]]]
JUDGE_TASKS = ("judge_open", "helpsteer_heldout", "noisy_image_text", "text_only")
IMAGE_KINDS = ("blank", "noise")
TEXT_ONLY = "none"  # text_only's image kind: the policy is sent no image at all
NOISE_SIZE = 336  # LLaVA-1.5's input side: the processor sees the noise at full detail
MAX_SAMPLES = 64


@dataclass
class EvaluationResult:
    records: list[dict[str, Any]]
    metrics: dict[str, Any]
    stopped: bool = False  # should_stop() ended the run early: records cover part of it


@dataclass(frozen=True)
class _Unit:
    """One thing the policy answers: an item, or for noisy_image_text an item x image kind."""

    key: str
    item: EvalItem
    image_kind: str = ""


def evaluate(
    task: str,
    items: Sequence[EvalItem],
    *,
    generate: GenerateFn,
    judge: Judge | None = None,
    prompt: str | None = None,
    samples: int = 1,
    on_progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    chunk_size: int = 32,
    judge_limits: RunLimits | None = None,
    review_prompt: str = DEFAULT_REVIEW_PROMPT,
    image_kinds: Sequence[str] = IMAGE_KINDS,
    noise_seed: int = 0,
) -> EvaluationResult:
    """Evaluate `items` on `task`; records are JSON-serialisable, one per item (per item and
    image kind for noisy_image_text), in item order.

    A judge that fails for good (FatalJudgeError: a bad key, an unknown model) stops the run
    with that error; one that only fails on some answers leaves them unscored.
    """
    if task not in TASKS:
        raise EvaluationError(f"unknown task {task!r}; tasks are {', '.join(TASKS)}")
    prompt = prompt_name(task, prompt)
    if not 1 <= samples <= MAX_SAMPLES:
        raise EvaluationError(f"samples must be between 1 and {MAX_SAMPLES}, not {samples}")
    if chunk_size < 1:
        raise EvaluationError(f"chunk_size must be at least 1, not {chunk_size}")
    if task in JUDGE_TASKS and judge is None:
        raise EvaluationError(f"{task} needs a judge")
    if task == "judge_open":
        review_template(review_prompt)  # an unknown version fails now, not after generating
    unknown = set(image_kinds) - set(IMAGE_KINDS)
    if task == "noisy_image_text" and (unknown or not image_kinds):
        raise EvaluationError(f"image kinds are {', '.join(IMAGE_KINDS)}, not {sorted(unknown)}")
    units = _units(task, items, image_kinds)
    records: list[dict[str, Any]] = []
    stopped = False
    if on_progress:
        on_progress(0, len(units))
    for start in range(0, len(units), chunk_size):
        if should_stop and should_stop():
            stopped = True
            break
        chunk = units[start : start + chunk_size]
        prompts = [render(task, prompt, u.item) for u in chunk]
        inputs = [(u.key, p, _image(u, noise_seed)) for u, p in zip(chunk, prompts, strict=True)]
        answers = _checked(generate(inputs, samples), len(chunk), samples)
        rows = [_record(task, u, p, a) for u, p, a in zip(chunk, prompts, answers, strict=True)]
        if task in JUDGE_TASKS:
            assert judge is not None
            _judge_chunk(task, judge, chunk, rows, judge_limits or RunLimits(), review_prompt)
        records.extend(rows)
        if on_progress:
            on_progress(len(records), len(units))
    return EvaluationResult(records, compute_metrics(task, records), stopped)


def _units(task: str, items: Sequence[EvalItem], kinds: Sequence[str]) -> list[_Unit]:
    keys = [i.key for i in items]
    if len(set(keys)) != len(keys):
        repeated = next(k for k, n in Counter(keys).items() if n > 1)
        raise EvaluationError(f"item key {repeated!r} appears more than once")
    if task == "noisy_image_text":
        return [_Unit(f"{i.key}/{kind}", i, kind) for i in items for kind in kinds]
    if task == "text_only":
        return [_Unit(i.key, i, TEXT_ONLY) for i in items]
    return [_Unit(i.key, i) for i in items]


def _image(unit: _Unit, noise_seed: int) -> Image.Image | None:
    from PIL import Image

    if unit.image_kind == "blank":
        return Image.new("RGB", (NOISE_SIZE, NOISE_SIZE), "white")
    if unit.image_kind == TEXT_ONLY:
        return None
    if unit.image_kind == "noise":
        # Seeded by the item, so an item gets the same noise whatever runs beside it.
        rng = random.Random(f"{noise_seed}:{unit.item.key}")  # noqa: S311 - not security
        data = rng.randbytes(NOISE_SIZE * NOISE_SIZE * 3)
        return Image.frombytes("RGB", (NOISE_SIZE, NOISE_SIZE), data)
    if unit.item.image is None:
        return None
    with Image.open(io.BytesIO(unit.item.image)) as image:
        return image.convert("RGB")


def _checked(answers: Any, n: int, samples: int) -> list[list[str]]:
    if not isinstance(answers, list) or len(answers) != n:
        raise EvaluationError(f"generate returned {_count(answers)} answer lists for {n} inputs")
    for texts in answers:
        if not isinstance(texts, list) or len(texts) != samples:
            raise EvaluationError(f"generate returned {_count(texts)} answers, not {samples}")
        if not all(isinstance(t, str) for t in texts):
            raise EvaluationError("generate returned an answer that is not text")
    return answers


def _count(value: Any) -> str:
    return str(len(value)) if isinstance(value, list) else type(value).__name__


# --- records ------------------------------------------------------------------------------------


def _record(task: str, unit: _Unit, prompt: str, answers: list[str]) -> dict[str, Any]:
    item = unit.item
    record: dict[str, Any] = {
        "key": unit.key,
        "prompt": prompt,
        "answers": answers,
        "has_image": unit.image_kind != TEXT_ONLY
        and (item.image is not None or bool(unit.image_kind)),
        "subject": item.subject,
        "context": item.context,
        "split": item.split,
        "category": item.category,
    }
    if task == "scienceqa":
        assert isinstance(item.answer, int)
        parsed = [parse_choice(a, len(item.choices), item.choices) for a in answers]
        gold = LETTERS[item.answer]
        letters = [LETTERS[p] if p is not None else None for p in parsed]
        record |= _classified(letters, gold)
    elif task == "pope":
        record |= _classified([parse_yes_no(a) for a in answers], str(item.answer))
    elif task == "judge_open":
        record |= {"gold": item.answer, "score": None, "reference_score": None}
    else:
        record |= {"image_kind": unit.image_kind, "score": None, "attributes": {}}
    return record


def _classified(parsed: list[str | None], gold: str) -> dict[str, Any]:
    correct = [p == gold for p in parsed]
    majority = _majority(parsed)
    return {
        "gold": gold,
        "parsed": parsed,
        "correct": correct,
        "score": sum(correct) / len(correct),
        "majority": majority,
        "majority_correct": majority == gold,
    }


def _majority(parsed: list[str | None]) -> str | None:
    """The most frequent parsed answer; a tie goes to the one given first (Counter keeps
    insertion order), so the vote is deterministic."""
    votes = Counter(p for p in parsed if p is not None)
    return votes.most_common(1)[0][0] if votes else None


# --- judging ------------------------------------------------------------------------------------


def _judge_chunk(
    task: str,
    judge: Judge,
    units: Sequence[_Unit],
    rows: list[dict[str, Any]],
    limits: RunLimits,
    review_prompt: str,
) -> None:
    """Judge every answer of the chunk and fill in each record's judgements and score."""
    judge_items: list[JudgeItem] = []
    reviews: dict[str, str] = {}
    for unit, row in zip(units, rows, strict=True):
        item = unit.item
        for j, answer in enumerate(row["answers"]):
            key = f"{unit.key}#{j}"
            # noisy_image_text: the judge rates the answer to the instruction alone; the
            # blank or noise image is the policy's distraction, not part of the question.
            image = item.image if task not in ("noisy_image_text", "text_only") else None
            judge_items.append(
                JudgeItem(
                    key=key,
                    question=item.question,
                    completions=(answer,),
                    image=image,
                    image_mime=item.image_mime,
                    reference_answer=str(item.answer or ""),
                )
            )
            if task == "judge_open":
                reviews[key] = render_review(item, answer, version=review_prompt)
    outcomes: dict[str, ItemOutcome] = {}

    def keep(outcome: ItemOutcome) -> None:
        outcomes[outcome.item.key] = outcome

    if task == "judge_open":

        def review(judge_item: JudgeItem) -> TextResult:
            result = judge.complete(
                reviews[judge_item.key], judge_item.image, judge_item.image_mime
            )
            if parse_review_scores(result.text) is None:
                # Raised so that the judging runner asks again, as for any invalid answer.
                raise InvalidJudgeOutput(
                    "the first line is not two scores 'X Y'", raw=result.text, usage=result.usage
                )
            return result

        run_items(judge, judge_items, limits, on_outcome=keep, call=review)
    else:
        run_items(judge, judge_items, limits, on_outcome=keep)
    for unit, row in zip(units, rows, strict=True):
        judged = [outcomes[f"{unit.key}#{j}"] for j in range(len(row["answers"]))]
        row["judgements"] = [_judgement(task, o) for o in judged]
        row["judge_usage"] = {
            "input_tokens": sum(o.usage.input_tokens for o in judged),
            "output_tokens": sum(o.usage.output_tokens for o in judged),
        }
        _score_judged(task, row)


def _judgement(task: str, outcome: ItemOutcome) -> dict[str, Any]:
    raw = outcome.raw if outcome.result is None else outcome.result.raw
    base = {"raw": raw, "error": outcome.error}
    if task == "judge_open":
        scores = parse_review_scores(raw) if outcome.result is not None else None
        return base | {
            "reference_score": scores[0] if scores else None,
            "model_score": scores[1] if scores else None,
        }
    result = outcome.result
    if not isinstance(result, JudgeResult) or not result.ratings:
        return base | {"ratings": None, "reasoning": ""}
    rating = result.ratings[0]
    return base | {"ratings": rating.scores, "reasoning": rating.reasoning or result.reasoning}


def _score_judged(task: str, row: dict[str, Any]) -> None:
    judged = row["judgements"]
    if task == "judge_open":
        ok = [j for j in judged if j["model_score"] is not None]
        if ok:
            row["score"] = sum(j["model_score"] for j in ok) / len(ok)
            row["reference_score"] = sum(j["reference_score"] for j in ok) / len(ok)
        return
    rated = [j["ratings"] for j in judged if j["ratings"] is not None]
    if rated:
        row["attributes"] = {a: sum(r[a] for r in rated) / len(rated) for a in ATTRIBUTES}
        row["score"] = row["attributes"]["helpfulness"]


# --- the policy ---------------------------------------------------------------------------------


def backend_generate(
    backend: GenerationBackend,
    *,
    temperature: float,
    max_new_tokens: int,
    token_budget: int,
    seed: int = 0,
    top_p: float = 1.0,
    steer: str = "",
) -> GenerateFn:
    """The runner's `generate` on a generation backend: batched under the token budget,
    each sample seeded by (seed, item key, sample index), the prompt text sent unchanged
    (with `steer`, a SteerLM attribute string, opening each answer)."""
    from training.core.generation.core import GenerationRequest, generate_batches
    from training.core.generation.sampling import SamplingParams
    from training.core.generation.templates import PromptInput

    def generate(inputs: list[GenerateInput], samples: int) -> list[list[str]]:
        params = SamplingParams(
            k=samples,
            temperature=temperature,
            top_p=top_p,
            max_new_tokens=max_new_tokens,
            seed=seed,
            template="plain",
            steer=steer,
        )
        try:
            params.validate()
        except ValueError as exc:
            raise EvaluationError(str(exc)) from None
        requests = [
            GenerationRequest(key=key, prompt=PromptInput(text), image=image)
            for key, text, image in inputs
        ]
        texts: dict[str, list[str]] = {}
        for batch in generate_batches(backend, requests, params, token_budget=token_budget):
            for done in batch:
                texts[done.key] = done.texts
        return [texts[key] for key, _, _ in inputs]

    return generate


def transformers_generate(
    policy: LoadedPolicy,
    *,
    temperature: float,
    max_new_tokens: int,
    token_budget: int,
    seed: int = 0,
    top_p: float = 1.0,
    steer: str = "",
) -> GenerateFn:
    """`backend_generate` on a loaded checkpoint through transformers (CPU or GPU)."""
    from training.core.generation.core import TransformersBackend

    return backend_generate(
        TransformersBackend(policy),
        temperature=temperature,
        max_new_tokens=max_new_tokens,
        token_budget=token_budget,
        seed=seed,
        top_p=top_p,
        steer=steer,
    )
