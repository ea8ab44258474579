"""Services for evaluation runs (a task on a checkpoint, on the gpu queue) and comparisons.

The pure core is training/core/evaluation/: it reads the benchmark file, asks the policy and the
judge, and scores. Here: checks before anything is queued, the job body that stores each
item as an `EvaluationItem`, and the comparison of checkpoints with bootstrap intervals.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.urls import reverse
from django.utils.http import urlencode

from annotation.models import JudgeConfig
from training.core.evaluation import (
    TASKS,
    EvaluationError,
    bootstrap_diff,
    compute_metrics,
    evaluate,
    headline_metrics,
    load_items,
    metric_value,
    transformers_generate,
)
from training.core.evaluation.prompts import prompt_name
from training.core.evaluation.runner import JUDGE_TASKS
from training.core.generation import SamplingParams
from training.core.modeling import ModelLoadError, load_policy_cached
from training.models import Checkpoint, EvaluationItem, EvaluationRun, TrainingJob
from training.services.checkpoints import checkpoint_location
from workers.chunks import ChunkRun, chunk_kind, job_fan_out, job_run_here
from workers.jobs import JobFailed, job_create, job_enqueue
from workers.models import Job

# Answers are short for the multiple-choice and yes/no prompts; reasoning prompts need room.
DEFAULT_MAX_NEW_TOKENS = {"cot": 512, "zero_shot": 256}
DEFAULT_SHORT_TOKENS = 32
DEFAULT_OPEN_TOKENS = 512


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _max_new_tokens(task: str, prompt: str) -> int:
    if task in JUDGE_TASKS:
        return DEFAULT_OPEN_TOKENS
    return DEFAULT_MAX_NEW_TOKENS.get(prompt, DEFAULT_SHORT_TOKENS)


@dataclass
class EvaluationSpec:
    """What an evaluation run is asked to do; checked whole before it is queued."""

    task: str
    data: str
    prompt: str | None = None
    temperature: float = 0.0
    samples: int = 1
    max_new_tokens: int | None = None
    limit: int | None = None
    all_contexts: bool = False
    split: str | None = None
    judge_id: int | None = None
    seed: int = 0
    # A SteerLM attribute string that opens every answer (a SteerLM checkpoint, steered).
    steer: str = ""

    def checked(self) -> EvaluationSpec:
        """Normalised (prompt and token defaults filled in); ValueError lists the problems."""
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r} (tasks: {', '.join(TASKS)})")
        errors = []
        try:
            self.prompt = prompt_name(self.task, self.prompt or None)
        except EvaluationError as exc:
            errors.append(str(exc))
        if self.limit is not None and self.limit < 1:
            errors.append(f"limit must be at least 1, not {self.limit}")
        if self.max_new_tokens is None:
            self.max_new_tokens = _max_new_tokens(self.task, self.prompt or "")
        try:  # the sampling rules of generation, which the run goes through
            SamplingParams(
                k=self.samples,
                temperature=self.temperature,
                max_new_tokens=self.max_new_tokens,
                seed=self.seed,
                steer=self.steer,
            ).validate()
        except ValueError as exc:
            errors.append(str(exc).replace("k must", "samples must", 1))
        if self.task in JUDGE_TASKS:
            if self.judge_id is None:
                errors.append(f"{self.task} needs a judge")
            elif not JudgeConfig.objects.filter(pk=self.judge_id).exists():
                errors.append(f"judge #{self.judge_id} does not exist")
        path = Path(self.data).expanduser()
        if not path.is_file():
            errors.append(f"data file {self.data} does not exist")
        elif not errors:
            try:  # the first item: a wrong format or column fails here, not on the GPU
                load_items(
                    self.task, path, limit=1, all_contexts=self.all_contexts, split=self.split
                )
            except EvaluationError as exc:
                errors.append(str(exc))
        if errors:
            raise ValueError("; ".join(errors))
        self.data = str(path.resolve())
        return self

    def params(self) -> dict[str, Any]:
        """What the run stores as its parameters (task, file, prompt and judge have columns)."""
        return {k: v for k, v in asdict(self).items() if k not in RUN_COLUMNS}


RUN_COLUMNS = ("task", "data", "prompt", "judge_id")
SPEC_KEYS = frozenset(f.name for f in fields(EvaluationSpec))


def _spec(values: dict[str, Any]) -> EvaluationSpec:
    unknown = sorted(set(values) - SPEC_KEYS)
    if unknown:
        raise ValueError(f"unknown evaluation keys: {', '.join(unknown)}")
    if "task" not in values or "data" not in values:
        raise ValueError("an evaluation needs a task and a data file")
    return EvaluationSpec(**values).checked()


def evaluation_specs_check(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Check the evaluations a training job asks for; return them normalised."""
    out = []
    for i, values in enumerate(specs, start=1):
        try:
            spec = _spec(dict(values))
        except ValueError as exc:
            raise ValueError(f"evaluation {i}: {exc}") from None
        out.append(asdict(spec))
    return out


def evaluation_launch(
    *,
    checkpoint: Checkpoint,
    user: Any = None,
    enqueue: bool = True,
    training_job: TrainingJob | None = None,
    **values: Any,
) -> EvaluationRun:
    """Check the spec (task, file, prompt, sampling, judge), then queue a gpu job."""
    spec = _spec(values)
    with transaction.atomic():
        steered = f", steered {spec.steer}" if spec.steer else ""
        job = job_create(
            kind=Job.Kind.EVALUATION,
            title=f"{spec.task} ({spec.prompt}{steered}) on {checkpoint.name}",
            # Items per chunk: every worker on the gpu queue may take chunks of the run.
            params={"chunk_size": settings.JOB_CHUNK_SIZE},
            created_by=user,
        )
        run = EvaluationRun.objects.create(
            checkpoint=checkpoint,
            task=spec.task,
            data_path=spec.data,
            data_sha256=_file_sha256(Path(spec.data)),
            prompt=spec.prompt or "",
            params=spec.params(),
            judge_id=spec.judge_id,
            training_job=training_job,
            job=job,
            created_by=user,
        )
        if enqueue:
            job_enqueue(job)
    return run


def _item_rows(
    run: EvaluationRun, records: list[dict[str, Any]], positions: list[int]
) -> list[EvaluationItem]:
    kept = {"key", "prompt", "answers", "parsed", "gold", "score"}
    kept |= {"subject", "context", "split", "category"}
    return [
        EvaluationItem(
            run=run,
            position=position,
            key=str(r["key"])[:200],
            subject=(r.get("subject") or "")[:50],
            context=(r.get("context") or "")[:10],
            split=(r.get("split") or "")[:50],
            category=(r.get("category") or "")[:100],
            prompt=r.get("prompt") or "",
            answers=r.get("answers") or [],
            parsed=r.get("parsed") or [],
            gold="" if r.get("gold") is None else str(r["gold"]),
            score=r.get("score"),
            record={k: v for k, v in r.items() if k not in kept},
        )
        for position, r in zip(positions, records, strict=True)
    ]


def evaluation_run(*, job_id: int) -> None:
    """Run an evaluation job in this process, chunk after chunk (commands, the loop)."""
    job_run_here(job_id, _plan)


def evaluation_shard(*, job_id: int) -> None:
    """The gpu-queue task: send the job's chunks of items to every worker on the queue."""
    job_fan_out(job_id, _plan)


def _evaluation(job: Job) -> EvaluationRun:
    evaluation = (
        EvaluationRun.objects.select_related("checkpoint", "judge").filter(job_id=job.pk).first()
    )
    if evaluation is None:
        raise JobFailed("this job has no evaluation run row")
    return evaluation


# The items last read in this process: a worker taking several chunks of one run (and the
# job task planning them) reads its data file, images and all, once.
_ITEMS: dict[tuple[Any, ...], list[Any]] = {}


def _items(evaluation: EvaluationRun) -> list[Any]:
    p = evaluation.params
    key = (
        evaluation.task,
        evaluation.data_path,
        evaluation.data_sha256,
        p.get("limit"),
        p.get("all_contexts", False),
        p.get("split"),
    )
    if key not in _ITEMS:
        try:
            items = load_items(
                evaluation.task,
                evaluation.data_path,
                limit=p.get("limit"),
                all_contexts=p.get("all_contexts", False),
                split=p.get("split"),
            )
        except (EvaluationError, OSError) as exc:
            raise JobFailed(str(exc)) from None
        _ITEMS.clear()
        _ITEMS[key] = items
    return _ITEMS[key]


def _plan(job: Job) -> list[int]:
    """The items' positions in the data file as read (the file's checksum is frozen on the
    run, so every worker reads the same list)."""
    return list(range(len(_items(_evaluation(job)))))


def _evaluation_chunk(run: ChunkRun) -> None:
    """Evaluate one chunk of items and store their rows; the run's metrics are computed
    over every chunk's records once the last one is done (`_merge_evaluation`)."""
    evaluation = _evaluation(run.job)
    p = evaluation.params
    items = _items(evaluation)
    subset = [items[i] for i in run.items]
    checkpoint = evaluation.checkpoint
    adapter = checkpoint_location(checkpoint.adapter_path) if checkpoint.adapter_path else None
    try:
        policy = load_policy_cached(
            checkpoint_location(checkpoint.model_path), adapter_path=adapter
        )
    except ModelLoadError as exc:
        raise JobFailed(f"checkpoint {checkpoint.name}: {exc}") from None
    judge = None
    if evaluation.judge is not None:
        from annotation.services.judging import build_judge

        try:
            judge = build_judge(evaluation.judge)
        except ValueError as exc:
            raise JobFailed(str(exc)) from None
    budget = (
        settings.GENERATION_TOKEN_BUDGET_GPU
        if policy.device.startswith("cuda")
        else settings.GENERATION_TOKEN_BUDGET_CPU
    )
    if run.chunk.index == 0:
        run.log(f"{len(items)} items of {Path(evaluation.data_path).name} on {policy.device}")

    def progress(done: int, total: int) -> None:
        if done == 0:
            run.restart(total)  # noisy_image_text answers each item once per image kind
        else:
            run.advance(done - run.chunk.done, force=True)

    try:
        result = evaluate(
            evaluation.task,
            subset,
            generate=transformers_generate(
                policy,
                temperature=p["temperature"],
                max_new_tokens=p["max_new_tokens"],
                token_budget=budget,
                seed=p.get("seed", 0),
                steer=p.get("steer", ""),
            ),
            judge=judge,
            prompt=evaluation.prompt or None,
            samples=p["samples"],
            on_progress=progress,
        )
    except EvaluationError as exc:
        raise JobFailed(str(exc)) from None
    # A cancel raises JobCancelled from `progress` (ChunkRun.advance), out of evaluate.
    per_item = len(result.records) // max(len(subset), 1)
    positions = [i * per_item + j for i in run.items for j in range(per_item)]
    with transaction.atomic():  # a chunk delivered again replaces its own rows
        EvaluationItem.objects.filter(run=evaluation, position__in=positions).delete()
        EvaluationItem.objects.bulk_create(_item_rows(evaluation, result.records, positions), 500)
    run.set_metrics(records=result.records)


def _merge_evaluation(job: Job, chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """Metrics over every chunk's records, in item order, as one process would have them."""
    evaluation = _evaluation(job)
    records = [record for m in chunks for record in m.get("records", [])]
    evaluation.metrics = compute_metrics(evaluation.task, records)
    evaluation.item_count = len(records)
    evaluation.save(update_fields=["metrics", "item_count"])
    return {m: metric_value(evaluation.metrics, m) for m in headline_metrics(evaluation.task)}


chunk_kind(Job.Kind.EVALUATION, _evaluation_chunk, _merge_evaluation)


# --- comparing ----------------------------------------------------------------------------


def latest_runs(
    checkpoints: list[Checkpoint], tasks: list[str]
) -> dict[tuple[int, str], EvaluationRun]:
    """The latest finished run of each (checkpoint, task)."""
    runs = (
        EvaluationRun.objects.filter(
            checkpoint__in=checkpoints, task__in=tasks, job__status=Job.Status.SUCCEEDED
        )
        .select_related("checkpoint")
        .order_by("created_at")
    )
    return {(r.checkpoint_id, r.task): r for r in runs}


def _scores(run: EvaluationRun) -> dict[str, float]:
    return {key: score for key, score in run.items.exclude(score=None).values_list("key", "score")}


# Breakdowns shown per task: (metrics key, label, metric inside each group).
BREAKDOWNS = {
    "scienceqa": (("by_subject", "subject", "accuracy"), ("by_context", "context", "accuracy")),
    "pope": (("by_category", "split", "f1"),),
    "judge_open": (("by_category", "category", "relative_score"),),
    # The text regression check: no image, a blank one, noise (seed 001).
    "noisy_image_text": (("by_image", "image", "helpfulness"),),
    "text_only": (("by_image", "image", "helpfulness"),),
}


def _breakdown(rows: list[dict[str, Any]], key: str, label: str, metric: str) -> dict | None:
    """One breakdown table: the groups any run reports under `key`, a row per checkpoint."""
    groups: list[str] = []
    for row in rows:
        for group in row["run"].metrics.get(key) or {} if row["run"] else {}:
            if group not in groups:
                groups.append(group)
    if not groups:
        return None
    cells = [
        (
            row["checkpoint"].name,
            [
                metric_value(row["run"].metrics, f"{key}.{g}.{metric}") if row["run"] else None
                for g in groups
            ],
        )
        for row in rows
    ]
    return {"label": label, "metric": metric, "groups": groups, "rows": cells}


def compare_url(
    checkpoint_ids: Sequence[int], tasks: Sequence[str], *, baseline_id: int | None = None
) -> str:
    """The comparison page of these checkpoints (in this order) on these tasks."""
    query: dict[str, Any] = {"checkpoints": list(checkpoint_ids), "tasks": list(tasks)}
    if baseline_id is not None:
        query["baseline"] = baseline_id
    return f"{reverse('training:compare')}?{urlencode(query, doseq=True)}"


def evaluation_compare(
    *,
    checkpoints: list[Checkpoint],
    tasks: list[str],
    baseline: Checkpoint | None = None,
    n_resamples: int = 1000,
) -> list[dict[str, Any]]:
    """Per task: each checkpoint's headline metrics (`values`, in the order of
    `metric_names`), its difference to the baseline on the items both scored with a paired
    bootstrap 95% interval, and the per-group breakdowns."""
    baseline = baseline or (checkpoints[0] if checkpoints else None)
    runs = latest_runs(checkpoints, tasks)
    scores: dict[int, dict[str, float]] = {}  # one items query per run

    def scores_of(run: EvaluationRun) -> dict[str, float]:
        if run.pk not in scores:
            scores[run.pk] = _scores(run)
        return scores[run.pk]

    tables = []
    for task in tasks:
        names = headline_metrics(task)
        base_run = runs.get((baseline.pk, task)) if baseline else None
        rows = []
        for checkpoint in checkpoints:
            run = runs.get((checkpoint.pk, task))
            row: dict[str, Any] = {"checkpoint": checkpoint, "run": run}
            if run is not None:
                row["values"] = [metric_value(run.metrics, m) for m in names]
                row["n"] = run.item_count
                row["parse_failures"] = run.metrics.get("parse_failures")
                if base_run is not None and run.pk != base_run.pk:
                    mine, theirs = scores_of(run), scores_of(base_run)
                    if mine and theirs:
                        row["diff"] = bootstrap_diff(theirs, mine, n_resamples=n_resamples)
            rows.append(row)
        breakdowns = [
            table
            for key, label, metric in BREAKDOWNS.get(task, ())
            if (table := _breakdown(rows, key, label, metric)) is not None
        ]
        tables.append(
            {
                "task": task,
                "baseline": baseline,
                "metric_names": names,
                "rows": rows,
                "breakdowns": breakdowns,
            }
        )
    return tables
