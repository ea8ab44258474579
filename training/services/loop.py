"""The alignment loop from the instruction-tuned start, stage by stage, in this process.

start (built once, cached) -> held-out evaluation world + a disjoint prompt pool -> import the
pool -> generate K=4 at T=0.7 -> oracle ratings -> curate best_vs_random_gap (DPO),
rejection_sampling (RS) and steerlm -> train DPO, RS-SFT and SteerLM from the start -> round 2:
generate from DPO, rate, curate, DPO again (design step 8, iterative DPO) -> evaluate every
checkpoint on ScienceQA and POPE -> deltas against the start with paired bootstrap intervals.

Every stage goes through the same services (and job rows) as the pages and commands; only the
queue is skipped, each job body running here. Used by `manage.py run_loop` and the loop test.

Each stage is a small function that takes what it needs and returns a frozen record of what
it made, with a one-line `detail`; `run_loop` is the list of stages, each called through one
timer, and a round is a function that calls stages.

Why this start (issue 14): preference data only helps a model that can do the task but does
not use the ability well. The start sees colours (its training reaches 0.99-1.0 on colour
existence without the prior), but its instruction data said "yes" to the partner of a colour
it sees, so it hallucinates on POPE. Its own samples, rated by the oracle, give pairs that
say "not that one", which is what DPO can use.

Measured findings kept here because the numbers depend on them:
- Iterative DPO: the second round's pool has fewer prompts with two different answers
  (32-41% against 72-74%), so fewer pairs; over runs it gained +18.9 to +24.4 points
  against +16.6 to +24.5 after one round, not reliably more.
- SteerLM collapses on this model: after its training the next-token distribution after
  the attribute string is the same for every image and every label (log P(yes) -0.82,
  log P(no) -1.41, measured), i.e. the 2-layer model learns the marginal answer and ignores
  what sits before the label. 1,000 steps at lr 1e-4 gave the same. It is reported as it is.
- Every method pays an alignment tax on ScienceQA, which the pool does not ask: trained on
  short-answer prompts, the models answer multiple choice with a bare word more often.
  With multiple-choice prompts in the pool (`multiple_choice`, a fifth of it) the tax turns
  into a gain (ScienceQA 0.36 -> 0.47 after DPO), but the first round's POPE gain falls to
  +3.7 points [+1.7, +5.8] (round 2: +21.7): so the default pool leaves them out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, Protocol, TypeVar

from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from annotation.models import JudgeCall, JudgeConfig
from annotation.services import judging
from datasets_app.core.shapes import MULTIPLE_CHOICE, SHORT_ANSWER, make_loop_data
from datasets_app.core.shapes import question_kind as shapes_question_kind
from datasets_app.models import DatasetRow, DatasetVersion, Source
from datasets_app.services import versions
from datasets_app.services.imports import prompts_import
from training.core.evaluation.data import load_items
from training.core.generation import SamplingParams
from training.core.loop_results import accuracy_interval
from training.models import Checkpoint, EvaluationRun, LoopRun
from training.services import evaluations, generation, loop_runs, trainings
from training.services.start import StartBuilt, StartRecipe, start_checkpoint
from workers.models import Job

ROLES = ("start", "dpo", "rs", "steerlm", "dpo_round2")
TASKS = ("scienceqa", "pope")
HEADLINE = "pope"  # where the start's flaw is, and what the README names
# Held-out world: every image gives one ScienceQA item and six POPE items.
DEFAULT_EVAL_IMAGES = 300
DEFAULT_POOL_IMAGES = 1200
DEFAULT_ROUNDS = 2
K, TEMPERATURE = 4, 0.7  # seed 001's sampling

# Measured out of tree first (issue 14's note), then through these recipes: the full model
# (projector and vision tower too), RPO's NLL term on the chosen answer so that its
# likelihood does not fall with the rejected one, lr 4e-4, 300 steps of 16 pairs (measured:
# +22.2 points [+18.5, +26.0] on POPE; lr 2e-4 for 600 steps gave +22.8, twice as long).
_FULL = {"finetune": "full", "freeze_vision_tower": False, "train_projector": True}
TRAIN_COMMON = {
    **_FULL,
    "per_device_train_batch_size": 16,
    "per_device_eval_batch_size": 64,
    "lr_scheduler_type": "linear",
    "warmup_ratio": 0.03,
    "logging_steps": 10,
    "save_steps": 0,
    "torch_threads": 2,
}
DPO_OVERRIDES = {
    "learning_rate": 4e-4,
    "max_steps": 300,
    "beta": 0.1,
    "loss_type": ["sigmoid", "sft"],
}
SFT_OVERRIDES = {"learning_rate": 2e-4, "max_steps": 300}  # rejection sampling and SteerLM
# min_score 12 of 12: right, direct and coherent (the oracle gives 4 + 4 + 4 for it).
REJECTION_SAMPLING_PARAMS = {"min_score": 12}
CURATION_FILTERS = {"eval_fraction": 0.1}
ORACLE = {"name": "oracle (rules)", "provider": "oracle", "model": "rules-v1"}
EVAL_OPTIONS: dict[str, dict[str, Any]] = {
    "scienceqa": {"max_new_tokens": 8},  # "The answer is X." and its end
    "pope": {"max_new_tokens": 4},
}


class LoopError(RuntimeError):
    """A stage failed; the message names it and says why."""


@dataclass(frozen=True)
class LoopConfig:
    """The command's options and where this loop's files go (one folder per loop)."""

    tag: str
    root: Path
    eval_images: int = DEFAULT_EVAL_IMAGES
    pool_images: int = DEFAULT_POOL_IMAGES
    rounds: int = DEFAULT_ROUNDS
    seed: int = 0
    k: int = K
    temperature: float = TEMPERATURE
    # Multiple-choice prompts in the pool as well (asked as ScienceQA evaluation asks them).
    multiple_choice: bool = False
    dpo_steps: int = DPO_OVERRIDES["max_steps"]
    sft_steps: int = SFT_OVERRIDES["max_steps"]
    start: StartRecipe = field(default_factory=StartRecipe)

    @classmethod
    def new(cls, **options: Any) -> LoopConfig:
        tag = f"loop-{timezone.now():%Y%m%d-%H%M%S}"
        root = Path(settings.CHECKPOINT_ROOT) / "loops" / tag
        return cls(tag=tag, root=root, **options)

    def check(self) -> None:
        problems = []
        if self.eval_images < 10:
            problems.append("--eval-images must be at least 10")
        if self.pool_images < 20:
            problems.append("--pool-images must be at least 20")
        if not 1 <= self.rounds <= 5:
            problems.append("--rounds must be 1-5")
        if not 2 <= self.k <= 16:
            problems.append("--k must be 2-16 (pairs need two samples)")
        if self.dpo_steps < 1 or self.sft_steps < 1:
            problems.append("--dpo-steps and --sft-steps must be at least 1")
        if problems:
            raise LoopError("; ".join(problems))

    def record(self) -> dict[str, Any]:
        values = asdict(self)
        values["root"] = str(self.root)
        values["headline"] = HEADLINE
        return values


# What each stage makes. `detail` is the stage's line in the log.


@dataclass(frozen=True)
class World:
    eval_dir: Path
    pool_path: Path
    counts: dict[str, Any]

    @property
    def detail(self) -> str:
        c = self.counts
        return (
            f"held out: {c['scienceqa']} ScienceQA and {c['pope']} POPE items; "
            f"pool: {c['pool']['rows']} prompts ({c['pool']['kinds']}), disjoint images"
        )


@dataclass(frozen=True)
class Imported:
    source: Source
    prompts: int

    @property
    def selection(self) -> dict[str, Any]:
        return {"source_id": self.source.pk, "split": "train"}

    @property
    def detail(self) -> str:
        return f"{self.prompts} prompts"


@dataclass(frozen=True)
class Generated:
    policy: Checkpoint
    completions: int
    distinct: float  # share of prompts whose samples hold at least two different answers
    generated_tokens: int = 0

    @property
    def detail(self) -> str:
        return f"{self.completions} completions; {self.distinct:.0%} of prompts got 2+ answers"


@dataclass(frozen=True)
class Judged:
    judge: JudgeConfig
    prompts: int
    calls: int = 0  # judge calls paid for (cache hits are free)
    cost_usd: float = 0.0

    @property
    def detail(self) -> str:
        return f"{self.prompts} prompts rated"


@dataclass(frozen=True)
class Curated:
    key: str
    strategy: str
    version: DatasetVersion | None  # None: the recipe made no rows (`empty` says why)
    empty: str = ""

    @property
    def detail(self) -> str:
        if self.version is None:
            return f"no rows: {self.empty}"
        stats = self.version.stats
        splits = ", ".join(f"{n} {s}" for s, n in sorted(stats.get("splits", {}).items()))
        shown = f"{self.version} with {self.version.row_count} rows ({self.strategy})"
        return f"{shown} from {stats.get('prompts')} prompts; {splits}"


@dataclass(frozen=True)
class Trained:
    checkpoint: Checkpoint
    steps: int
    logps: list[list[float | None]]  # [step, logps/chosen, logps/rejected] as TRL logged them

    @property
    def detail(self) -> str:
        shown = f"{self.steps} steps"
        if self.logps:
            first, last = self.logps[0], self.logps[-1]
            shown += f"; logps/chosen {first[1]:.3f} -> {last[1]:.3f}"
        return shown


@dataclass(frozen=True)
class Evaluated:
    runs: dict[str, dict[str, EvaluationRun]]  # role -> task -> run

    @property
    def detail(self) -> str:
        parts = []
        for task in TASKS:
            shown = ", ".join(
                f"{role} {pct(by_task[task].metrics.get('accuracy'))}"
                for role, by_task in self.runs.items()
            )
            parts.append(f"{task} {shown}")
        return "; ".join(parts)


@dataclass
class LoopReport:
    tag: str
    record: LoopRun
    result: dict[str, Any]  # the --json line
    stages: list[tuple[str, float, str]] = field(default_factory=list)
    checkpoints: dict[str, Checkpoint] = field(default_factory=dict)

    @property
    def total_s(self) -> float:
        return sum(seconds for _, seconds, _ in self.stages)

    @property
    def compare_url(self) -> str:
        """The comparison page of the loop's checkpoints on both tasks, start first."""
        return evaluations.compare_url([c.pk for c in self.checkpoints.values()], TASKS)

    @property
    def record_url(self) -> str:
        return reverse("training:loop", args=[self.record.pk])


class _Made(Protocol):
    @property
    def detail(self) -> str: ...


P = ParamSpec("P")
R = TypeVar("R", bound=_Made)


class Timer:
    """Runs one stage, logs its start and its detail, and records its wall time."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self.log = log
        self.stages: list[tuple[str, float, str]] = []

    def __call__(self, name: str, stage: Callable[P, R], /, *args: P.args, **kw: P.kwargs) -> R:
        self.log(f"{name} ...")
        started = time.monotonic()
        made = stage(*args, **kw)
        seconds = time.monotonic() - started
        self.stages.append((name, seconds, made.detail))
        self.log(f"{name}: {made.detail} ({seconds:.1f} s)")
        return made


def run_loop(
    *, config: LoopConfig | None = None, log: Callable[[str], None] = lambda line: None
) -> LoopReport:
    config = config or LoopConfig.new()
    config.check()
    started = time.monotonic()
    stage = Timer(log)
    record = loop_runs.loop_run_start(tag=config.tag, config=config.record())
    try:
        report = _stages(config, stage, record, started)
    except Exception as exc:
        loop_runs.loop_run_fail(record, error=f"{type(exc).__name__}: {exc}", stages=stage.stages)
        if isinstance(exc, LoopError):
            raise
        raise LoopError(f"{type(exc).__name__}: {exc}") from exc
    return report


def _stages(config: LoopConfig, stage: Timer, record: LoopRun, started: float) -> LoopReport:
    start = stage(f"the start ({config.start.name})", build_start, config).checkpoint
    world = stage("make the held-out world and the pool", make_world, config)
    data = stage("import the pool", import_pool, config, world)
    oracle = _oracle()
    stage(f"generate K={config.k} from the start", generate, config, data, start)
    stage("oracle judge (rate the start)", rate, data, oracle, start)
    dpo_set = stage("curate DPO (best_vs_random_gap)", curate_dpo, config, data, "dpo", start)
    rs_set = stage("curate rejection-sampling SFT", curate_rs, config, data, start)
    steer_set = stage("curate SteerLM", curate_steerlm, config, data, start)
    trained = {
        "dpo": stage("train DPO", train_dpo, config, dpo_set, start, "dpo"),
        "rs": stage("train rejection-sampling SFT", train_sft, config, rs_set, start, "rs"),
        "steerlm": stage("train SteerLM", train_steerlm, config, steer_set, start),
    }
    sets = {"dpo": dpo_set, "rs": rs_set, "steerlm": steer_set}
    latest = trained["dpo"].checkpoint
    for n in range(2, config.rounds + 1):
        role = f"dpo_round{n}"
        stage(f"generate K={config.k} from {latest.name}", generate, config, data, latest)
        stage(f"oracle judge (rate round {n - 1})", rate, data, oracle, latest)
        sets[role] = stage(f"curate DPO (round {n})", curate_dpo, config, data, role, latest)
        trained[role] = stage(f"train DPO (round {n})", train_dpo, config, sets[role], latest, role)
        latest = trained[role].checkpoint
    policies = {"start": start, **{role: made.checkpoint for role, made in trained.items()}}
    steer = steering_label(sets["steerlm"])
    evaluated = stage(
        "evaluate every checkpoint", evaluate, world, policies, steer={"steerlm": steer}
    )

    result = loop_result(evaluated, policies, wall_s=time.monotonic() - started)
    breakdown = loop_breakdown(evaluated, world)
    logps = {role: made.logps for role, made in trained.items() if made.logps}
    record = loop_runs.loop_run_finish(
        record,
        result=result,
        breakdown=breakdown,
        stages=stage.stages,
        logps=logps,
        checkpoint_ids={role: c.pk for role, c in policies.items()},
        versions={key: (c.version.pk if c.version else None) for key, c in sets.items()},
    )
    return LoopReport(
        tag=config.tag,
        record=record,
        result=result,
        stages=stage.stages,
        checkpoints=policies,
    )


# The stages, in the order run_loop calls them.


def build_start(config: LoopConfig) -> StartBuilt:
    return start_checkpoint(recipe=config.start)


def make_world(config: LoopConfig) -> World:
    """The held-out evaluation files and the pool, from the start's world but other images
    (`World.part`), and no pool image equal to an evaluation image."""
    eval_dir = config.root / "heldout"
    counts = make_loop_data(
        eval_dir,
        n=config.eval_images,
        pool=config.pool_images,
        seed=config.seed + 1,
        multiple_choice=config.multiple_choice,
    )
    return World(eval_dir=eval_dir, pool_path=eval_dir / "pool.parquet", counts=counts)


def import_pool(config: LoopConfig, world: World) -> Imported:
    result = prompts_import(path=world.pool_path, source_name=f"{config.tag}-pool", fmt="prompts")
    return Imported(source=result.source, prompts=result.source.prompts.count())


# Each subject of the pool is asked the way its evaluation asks it.
GENERATION_TEMPLATES = {SHORT_ANSWER: ("short_answer", 4), MULTIPLE_CHOICE: ("lmms", 8)}


def generate(config: LoopConfig, data: Imported, policy: Checkpoint) -> Generated:
    completions = tokens = 0
    for subject, (template, max_new_tokens) in GENERATION_TEMPLATES.items():
        if not data.source.prompts.filter(subject=subject).exists():
            continue
        params = SamplingParams(
            k=config.k,
            temperature=config.temperature,
            max_new_tokens=max_new_tokens,
            seed=config.seed,
            template=template,
        )
        job = generation.generation_launch(
            checkpoint=policy,
            selection={**data.selection, "subject": subject},
            params=params,
            enqueue=False,
        )
        generation.generation_run(job_id=job.pk)
        job = _succeeded(job, f"generate {subject} from {policy.name}")
        completions += job.metrics.get("completions", 0)
        tokens += job.metrics.get("generated_tokens", 0)
    return Generated(
        policy=policy,
        completions=completions,
        distinct=_distinct_share(data, policy),
        generated_tokens=tokens,
    )


def rate(data: Imported, judge: JudgeConfig, policy: Checkpoint) -> Judged:
    """The oracle rates every completion `policy` made for the pool."""
    job = judging.judge_launch(
        judge_config=judge,
        selection=data.selection,
        checkpoint_id=policy.pk,
        mode=JudgeCall.Mode.RATE,
        enqueue=False,
    )
    judging.judge_run(job_id=job.pk)
    job = _succeeded(job, f"judge {policy.name}")
    return Judged(
        judge=judge,
        prompts=job.progress_done,
        calls=job.metrics.get("calls", 0),
        cost_usd=float(job.metrics.get("cost_usd", 0.0)),
    )


def curate_dpo(config: LoopConfig, data: Imported, key: str, policy: Checkpoint) -> Curated:
    return _curate(config, data, key, "best_vs_random_gap", [policy])


def curate_rs(config: LoopConfig, data: Imported, policy: Checkpoint) -> Curated:
    """Per prompt, the best of its samples that is right, direct and coherent."""
    params = REJECTION_SAMPLING_PARAMS
    return _curate(config, data, "rs", "rejection_sampling", [policy], params=params)


def curate_steerlm(config: LoopConfig, data: Imported, policy: Checkpoint) -> Curated:
    return _curate(config, data, "steerlm", "steerlm", [policy])


def train_dpo(
    config: LoopConfig, dataset: Curated, parent: Checkpoint, role: str = "dpo"
) -> Trained:
    return _train(
        config, role, "dpo", dataset, parent, {**DPO_OVERRIDES, "max_steps": config.dpo_steps}
    )


def train_sft(
    config: LoopConfig, dataset: Curated, parent: Checkpoint, role: str = "rs"
) -> Trained:
    return _train(
        config, role, "sft", dataset, parent, {**SFT_OVERRIDES, "max_steps": config.sft_steps}
    )


def train_steerlm(config: LoopConfig, dataset: Curated, parent: Checkpoint) -> Trained:
    overrides = {**SFT_OVERRIDES, "max_steps": config.sft_steps}
    return _train(config, "steerlm", "steerlm", dataset, parent, overrides)


def steering_label(dataset: Curated) -> str:
    """The attribute string SteerLM is asked for at evaluation: the best-rated label its
    training rows carry (highest helpfulness + correctness + coherence, then the most
    frequent among those), so that it is a string the model has seen."""
    if dataset.version is None:
        return ""
    labels = DatasetRow.objects.filter(version=dataset.version).values_list("label", flat=True)
    counted: dict[str, int] = {}
    for label in labels:
        if label:
            counted[label] = counted.get(label, 0) + 1

    def quality(label: str) -> tuple[float, int]:
        parts = dict(part.split(":") for part in label.split(","))
        top = sum(float(parts.get(a, 0)) for a in ("helpfulness", "correctness", "coherence"))
        return top, counted[label]

    return max(counted, key=quality) if counted else ""


def evaluate(
    world: World, policies: dict[str, Checkpoint], *, steer: dict[str, str] | None = None
) -> Evaluated:
    """Every checkpoint on both held-out tasks, one evaluation run each (SteerLM steered)."""
    steer = steer or {}
    runs: dict[str, dict[str, EvaluationRun]] = {}
    for role, checkpoint in policies.items():
        runs[role] = {}
        for task in TASKS:
            run = evaluations.evaluation_launch(
                checkpoint=checkpoint,
                task=task,
                data=str(world.eval_dir / f"{task}.parquet"),
                steer=steer.get(role, ""),
                enqueue=False,
                **EVAL_OPTIONS[task],
            )
            evaluations.evaluation_run(job_id=run.job_id)
            _succeeded(run.job, f"evaluate {role} on {task}")
            run.refresh_from_db()
            runs[role][task] = run
    return Evaluated(runs=runs)


# The results.


def loop_result(
    evaluated: Evaluated, policies: dict[str, Checkpoint], *, wall_s: float
) -> dict[str, Any]:
    """The --json object, exactly the keys of issue 14's contract: each checkpoint's scores
    and its deltas against the start, with paired bootstrap 95% intervals over the same
    held-out items."""
    checkpoints: dict[str, Any] = {}
    for role, by_task in evaluated.runs.items():
        sqa, pope = by_task["scienceqa"].metrics, by_task["pope"].metrics
        checkpoints[role] = {
            "name": policies[role].name,
            "scienceqa": {
                "accuracy": sqa.get("accuracy"),
                "n": by_task["scienceqa"].item_count,
                "parse_failures": sqa.get("parse_failures"),
            },
            "pope": {
                "accuracy": pope.get("accuracy"),
                "f1": pope.get("f1"),
                "n": by_task["pope"].item_count,
                "parse_failures": pope.get("parse_failures"),
            },
        }
    tables = evaluations.evaluation_compare(
        checkpoints=list(policies.values()), tasks=list(TASKS), baseline=policies["start"]
    )
    role_of = {c.pk: role for role, c in policies.items()}
    deltas: dict[str, dict[str, Any]] = {role: {} for role in policies if role != "start"}
    for table in tables:
        for row in table["rows"]:
            role = role_of[row["checkpoint"].pk]
            if role == "start":
                continue
            diff = row.get("diff")
            deltas[role][table["task"]] = (
                {"delta": diff["diff"], "ci95": [diff["low"], diff["high"]]} if diff else None
            )
    return {
        "wall_s": round(wall_s, 1),
        "headline": HEADLINE,
        "checkpoints": checkpoints,
        "deltas": deltas,
    }


def loop_breakdown(evaluated: Evaluated, world: World) -> dict[str, Any]:
    """Accuracy per question kind (ScienceQA) and per POPE split, with bootstrap intervals."""
    groups = {task: _item_groups(task, world.eval_dir / f"{task}.parquet") for task in TASKS}
    out: dict[str, Any] = {}
    for role, by_task in evaluated.runs.items():
        out[role] = {}
        for task, run in by_task.items():
            scored: dict[str, list[float]] = {}
            for key, score in run.items.exclude(score=None).values_list("key", "score"):
                scored.setdefault(groups[task].get(key, "other"), []).append(float(score))
            # POPE's own scorer gives F1 and the predicted yes-ratio per category too.
            by_category = run.metrics.get("by_category") or {} if task == "pope" else {}
            out[role][task] = {
                group: {
                    "accuracy": sum(values) / len(values),
                    "n": len(values),
                    "ci95": accuracy_interval(values),
                    **{
                        name: (by_category.get(group) or {}).get(name)
                        for name in ("f1", "yes_ratio")
                        if group in by_category
                    },
                }
                for group, values in sorted(scored.items())
            }
    return out


def _item_groups(task: str, path: Path) -> dict[str, str]:
    items = load_items(task, path)
    if task == "pope":
        return {item.key: item.category or "pope" for item in items}
    return {item.key: shapes_question_kind(item.question) for item in items}


# What the stages share.


def _distinct_share(data: Imported, policy: Checkpoint) -> float:
    from annotation.models import Completion

    answers: dict[int, set[str]] = {}
    for prompt_id, text in Completion.objects.filter(
        prompt__source=data.source, checkpoint=policy
    ).values_list("prompt_id", "text"):
        answers.setdefault(prompt_id, set()).add(text.strip().lower().rstrip("."))
    return sum(len(a) > 1 for a in answers.values()) / len(answers) if answers else 0.0


def _succeeded(job: Job, stage: str) -> Job:
    job.refresh_from_db()
    if job.status != Job.Status.SUCCEEDED:
        raise LoopError(f"{stage}: job #{job.pk} {job.status}: {job.error}")
    return job


def _oracle() -> JudgeConfig:
    defaults = {"provider": ORACLE["provider"], "model": ORACLE["model"]}
    oracle, _ = JudgeConfig.objects.get_or_create(name=ORACLE["name"], defaults=defaults)
    return oracle


def _curate(
    config: LoopConfig,
    data: Imported,
    key: str,
    strategy: str,
    policies: list[Checkpoint],
    **options: Any,
) -> Curated:
    try:
        version = versions.dataset_version_build(
            name=f"{config.tag}-{key}",
            strategy=strategy,
            selection=data.selection,
            checkpoint_ids=[p.pk for p in policies],
            filters=CURATION_FILTERS,
            seed=config.seed,
            **options,
        )
    except ValueError as exc:  # e.g. every sample of a prompt scored alike
        return Curated(key=key, strategy=strategy, version=None, empty=str(exc))
    return Curated(key=key, strategy=strategy, version=version)


def _train(
    config: LoopConfig,
    name: str,
    recipe: str,
    dataset: Curated,
    parent: Checkpoint,
    overrides: dict[str, Any],
) -> Trained:
    if dataset.version is None:
        raise LoopError(f"train {name}: the {dataset.key} set has no rows ({dataset.empty})")
    training = trainings.training_launch(
        recipe=recipe,
        dataset_version=dataset.version,
        base_checkpoint=parent,
        overrides={**TRAIN_COMMON, "seed": config.seed, **overrides},
        name=f"{config.tag}-{name}",
        enqueue=False,
    )
    trainings.training_run(job_id=training.job_id, poll_s=0.5)
    job = _succeeded(training.job, f"train {name}")
    checkpoint = trainings.training_checkpoint(training)
    if checkpoint is None:
        raise LoopError(f"train {name}: job #{job.pk} succeeded but registered no checkpoint")
    history = job.metrics["training"].get("history") or []
    logps = [
        [h["step"], h["logps/chosen"], h.get("logps/rejected")]
        for h in history
        if isinstance(h.get("logps/chosen"), int | float) and "step" in h
    ]
    return Trained(checkpoint=checkpoint, steps=job.progress_done, logps=logps)


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"
