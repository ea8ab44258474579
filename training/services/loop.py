"""The whole loop on the tiny model and the shapes world, stage by stage, in this process.

build the tiny model -> make shapes data -> import -> generate K=4 -> oracle judge ->
curate (a rejection-sampling SFT set, a DPO set, the judge-answer SFT set) -> train SFT ->
generate from the SFT checkpoint -> judge -> curate DPO -> train DPO -> evaluate base, SFT
and DPO on the held-out shapes (scienceqa and pope) -> compare.

Every stage goes through the same services (and job rows) as the pages and commands; only
the queue is skipped, each job body running here. Used by `manage.py run_loop` (the demo)
and by the end-to-end test.

Each stage is a small function that takes what it needs (the loop's config and what earlier
stages returned) and returns a frozen record of what it made, with a one-line `detail`;
`run_loop` is the list of stages in order, each called through one timer. A new stage is one
more function and one more line there; a round is a function that calls stages.

The base model has random weights, so none of its samples answers a question: rejection
sampling over them has nothing correct to keep. The first SFT set is therefore the judge's
own answers (`judge_answer_sft`, seed 001's baseline, seed 003's AI-judge answers); the
rejection-sampling and DPO sets of the base are still built and reported. From the SFT
checkpoint on, samples can be right, and the DPO set comes from them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, Protocol, TypeVar

from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from annotation.models import JudgeCall, JudgeConfig
from annotation.services import judging
from datasets_app.core.shapes import make_shapes
from datasets_app.models import DatasetVersion, Source
from datasets_app.services import versions
from datasets_app.services.imports import prompts_import
from training.core.generation import SamplingParams
from training.models import Checkpoint
from training.services import checkpoints, evaluations, generation, trainings
from workers.models import Job

# Small enough for a 2-core CPU in a few minutes, large enough for the SFT gain to show.
DEFAULT_IMAGES = 300
TRAIN_DEFAULTS = {
    "lora_r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.0,
    "per_device_train_batch_size": 8,
    "per_device_eval_batch_size": 32,
    "logging_steps": 5,
    "save_steps": 0,
    "torch_threads": 1,  # see tests/test_recipes.py: one thread is fastest for the tiny model
}
SFT_OVERRIDES = {"learning_rate": 3e-3, "num_train_epochs": 4.0}
DPO_OVERRIDES = {"learning_rate": 1e-3, "num_train_epochs": 2.0, "beta": 0.1}
# min_score 12 of 20: a right, direct, coherent answer (the oracle sums 4 + 4 + 4 for it).
REJECTION_SAMPLING_PARAMS = {"min_score": 12}
CURATION_FILTERS = {"eval_fraction": 0.1}
ORACLE = {"name": "oracle (rules)", "provider": "oracle", "model": "rules-v1"}
# task -> the shapes file it reads and its options (scienceqa's own test split is held out).
EVALUATIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "scienceqa": ("scienceqa.parquet", {"split": "test", "prompt": "zero_shot"}),
    "pope": ("pope.parquet", {}),
}


class LoopError(RuntimeError):
    """A stage failed; the message names it and says why."""


@dataclass(frozen=True)
class LoopConfig:
    """The command's options and where this loop's files go (one folder per loop)."""

    tag: str
    root: Path
    images: int = DEFAULT_IMAGES
    seed: int = 0
    k: int = 4

    @classmethod
    def new(cls, *, images: int, seed: int, k: int) -> LoopConfig:
        tag = f"loop-{timezone.now():%Y%m%d-%H%M%S}"
        root = Path(settings.CHECKPOINT_ROOT) / "loops" / tag
        return cls(tag=tag, root=root, images=images, seed=seed, k=k)

    @property
    def data_dir(self) -> Path:
        return self.root / "shapes"


# What each stage makes. `detail` is the stage's line in the log.


@dataclass(frozen=True)
class Built:
    base: Checkpoint
    path: Path

    @property
    def detail(self) -> str:
        return f"random-weight tiny LLaVA at {self.path}"


@dataclass(frozen=True)
class Shapes:
    data_dir: Path
    counts: dict[str, int]

    @property
    def detail(self) -> str:
        return f"{self.counts['scienceqa']} ScienceQA rows, {self.counts['pope']} POPE rows"


@dataclass(frozen=True)
class Imported:
    source: Source
    prompts: int

    @property
    def selection(self) -> dict[str, Any]:
        """What generation, judging and curation work on: the source's train split."""
        return {"source_id": self.source.pk, "split": "train"}

    @property
    def detail(self) -> str:
        return f"{self.prompts} prompts"


@dataclass(frozen=True)
class Generated:
    policy: Checkpoint
    completions: int

    @property
    def detail(self) -> str:
        return f"{self.completions} completions"


@dataclass(frozen=True)
class Judged:
    judge: JudgeConfig
    prompts: int
    mode: str

    @property
    def detail(self) -> str:
        return f"{self.prompts} prompts ({self.mode})"


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
        shown += f" from {stats.get('prompts')} prompts; {splits}"
        left_out = "; ".join(f"{why}: {n}" for why, n in (stats.get("dropped") or {}).items())
        return f"{shown}; left out {left_out}" if left_out else shown


@dataclass(frozen=True)
class Trained:
    checkpoint: Checkpoint
    steps: int
    evals: dict[str, float]

    @property
    def detail(self) -> str:
        shown = ", ".join(f"{k} {v:.3f}" for k, v in self.evals.items() if "runtime" not in k)
        return f"{self.steps} steps; {shown}"


@dataclass(frozen=True)
class Evaluated:
    accuracy: dict[str, dict[str, float | None]]  # task -> checkpoint label -> accuracy

    @property
    def detail(self) -> str:
        return "; ".join(
            f"{task} accuracy " + ", ".join(f"{n} {pct(a)}" for n, a in by_label.items())
            for task, by_label in self.accuracy.items()
        )


@dataclass
class LoopReport:
    tag: str
    stages: list[tuple[str, float, str]] = field(default_factory=list)  # name, seconds, detail
    checkpoints: dict[str, Checkpoint] = field(default_factory=dict)
    versions: dict[str, DatasetVersion | None] = field(default_factory=dict)
    accuracy: dict[str, dict[str, float | None]] = field(default_factory=dict)  # task -> ckpt
    data_dir: Path | None = None

    @property
    def total_s(self) -> float:
        return sum(seconds for _, seconds, _ in self.stages)

    @property
    def compare_url(self) -> str:
        """The comparison page of every checkpoint of the loop on every evaluated task."""
        ids = "&".join(f"checkpoints={c.pk}" for c in self.checkpoints.values())
        tasks = "".join(f"&tasks={task}" for task in self.accuracy)
        return f"{reverse('training:compare')}?{ids}{tasks}"


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
    *,
    images: int = DEFAULT_IMAGES,
    seed: int = 0,
    k: int = 4,
    log: Callable[[str], None] = lambda line: None,
) -> LoopReport:
    config = LoopConfig.new(images=images, seed=seed, k=k)
    stage = Timer(log)

    base = stage("build the tiny model", build_model, config).base
    shapes = stage("make shapes data", make_shapes_data, config)
    data = stage("import", import_shapes, config, shapes)
    stage(f"generate K={k} from base", generate, config, data, base)
    oracle = stage("oracle judge (rate base)", rate, data, base).judge
    stage("oracle judge (answers)", answer, data, oracle)
    rs_base = stage(
        "curate rejection-sampling SFT (base)", curate_rs, config, data, "rs-base", base
    )
    dpo_base = stage("curate DPO (base)", curate_dpo, config, data, "dpo-base", base)
    sft_set = stage("curate judge-answer SFT", curate_answers, config, data, oracle)
    sft = stage("train SFT", train_sft, config, sft_set, base).checkpoint
    stage(f"generate K={k} from SFT", generate, config, data, sft)
    stage("oracle judge (rate SFT)", rate, data, sft)
    rs_sft = stage("curate rejection-sampling SFT (SFT)", curate_rs, config, data, "rs-sft", sft)
    dpo_set = stage("curate DPO (SFT)", curate_dpo, config, data, "dpo", sft)
    if dpo_set.version is None:  # every SFT sample scored alike: pair with the base
        dpo_set = stage("curate DPO (SFT + base)", curate_dpo, config, data, "dpo", sft, base)
    dpo = stage("train DPO", train_dpo, config, dpo_set, sft).checkpoint
    checkpoints = {"base": base, "sft": sft, "dpo": dpo}
    evaluated = stage("evaluate base, SFT, DPO", evaluate, shapes, checkpoints)

    return LoopReport(
        tag=config.tag,
        stages=stage.stages,
        checkpoints=checkpoints,
        versions={c.key: c.version for c in (rs_base, dpo_base, sft_set, rs_sft, dpo_set)},
        accuracy=evaluated.accuracy,
        data_dir=shapes.data_dir,
    )


# The stages, in the order run_loop calls them.


def build_model(config: LoopConfig) -> Built:
    from training.core.modeling import build_tiny_llava

    path = build_tiny_llava(config.root / "tiny-llava", seed=config.seed)
    base = checkpoints.checkpoint_register_base(name=f"{config.tag}-base", model_path=str(path))
    return Built(base=base, path=path)


def make_shapes_data(config: LoopConfig) -> Shapes:
    counts = make_shapes(config.data_dir, n=config.images, seed=config.seed)
    return Shapes(data_dir=config.data_dir, counts=counts)


def import_shapes(config: LoopConfig, shapes: Shapes) -> Imported:
    result = prompts_import(
        path=shapes.data_dir / "scienceqa.parquet",
        source_name=f"{config.tag}-shapes",
        fmt="scienceqa",
    )
    return Imported(source=result.source, prompts=result.source.prompts.count())


def generate(config: LoopConfig, data: Imported, policy: Checkpoint) -> Generated:
    params = SamplingParams(
        k=config.k, temperature=1.0, max_new_tokens=16, seed=config.seed, template="zero_shot_mc"
    )
    job = generation.generation_launch(
        checkpoint=policy, selection=data.selection, params=params, enqueue=False
    )
    generation.generation_run(job_id=job.pk)
    job = _succeeded(job, f"generate from {policy.name}")
    return Generated(policy=policy, completions=job.metrics.get("completions", 0))


def rate(data: Imported, policy: Checkpoint) -> Judged:
    """The oracle rates every completion `policy` made for the selection."""
    return _judge(data, _oracle(), JudgeCall.Mode.RATE, policy)


def answer(data: Imported, judge: JudgeConfig) -> Judged:
    """The judge answers each question itself (what `judge_answer_sft` trains on)."""
    return _judge(data, judge, JudgeCall.Mode.ANSWER, None)


def curate_rs(config: LoopConfig, data: Imported, key: str, policy: Checkpoint) -> Curated:
    """A rejection-sampling SFT set: per prompt, the best of its samples that is good enough."""
    params = REJECTION_SAMPLING_PARAMS
    return _curate(config, data, key, "rejection_sampling", [policy], params=params)


def curate_dpo(config: LoopConfig, data: Imported, key: str, *policies: Checkpoint) -> Curated:
    return _curate(config, data, key, "best_vs_worst", list(policies))


def curate_answers(config: LoopConfig, data: Imported, judge: JudgeConfig) -> Curated:
    return _curate(config, data, "sft", "judge_answer_sft", [], answer_judge_id=judge.pk)


def train_sft(config: LoopConfig, dataset: Curated, parent: Checkpoint) -> Trained:
    return _train(config, "sft", "sft", dataset, parent, SFT_OVERRIDES)


def train_dpo(config: LoopConfig, dataset: Curated, parent: Checkpoint) -> Trained:
    return _train(config, "dpo", "dpo", dataset, parent, DPO_OVERRIDES)


def evaluate(shapes: Shapes, checkpoints: dict[str, Checkpoint]) -> Evaluated:
    """Every checkpoint on every held-out task, one evaluation run each."""
    accuracy: dict[str, dict[str, float | None]] = {}
    for task, (filename, options) in EVALUATIONS.items():
        accuracy[task] = {}
        for label, checkpoint in checkpoints.items():
            run = evaluations.evaluation_launch(
                checkpoint=checkpoint,
                task=task,
                data=str(shapes.data_dir / filename),
                max_new_tokens=16,
                enqueue=False,
                **options,
            )
            evaluations.evaluation_run(job_id=run.job_id)
            _succeeded(run.job, f"evaluate {label} on {task}")
            run.refresh_from_db()
            accuracy[task][label] = run.metrics.get("accuracy")
    return Evaluated(accuracy=accuracy)


# What the stages share.


def _succeeded(job: Job, stage: str) -> Job:
    job.refresh_from_db()
    if job.status != Job.Status.SUCCEEDED:
        raise LoopError(f"{stage}: job #{job.pk} {job.status}: {job.error}")
    return job


def _oracle() -> JudgeConfig:
    defaults = {"provider": ORACLE["provider"], "model": ORACLE["model"]}
    oracle, _ = JudgeConfig.objects.get_or_create(name=ORACLE["name"], defaults=defaults)
    return oracle


def _judge(data: Imported, judge: JudgeConfig, mode: str, policy: Checkpoint | None) -> Judged:
    job = judging.judge_launch(
        judge_config=judge,
        selection=data.selection,
        checkpoint_id=policy.pk if policy is not None else None,
        mode=mode,
        enqueue=False,
    )
    judging.judge_run(job_id=job.pk)
    job = _succeeded(job, f"judge {policy.name if policy is not None else 'answers'}")
    return Judged(judge=judge, prompts=job.progress_done, mode=mode)


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
            checkpoint_ids=[p.pk for p in policies] or None,
            filters=CURATION_FILTERS,
            seed=config.seed,
            **options,
        )
    except ValueError as exc:  # e.g. no sample of a random model is right
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
        overrides={**TRAIN_DEFAULTS, **overrides},
        name=f"{config.tag}-{name}",
        enqueue=False,
    )
    trainings.training_run(job_id=training.job_id, poll_s=0.5)
    job = _succeeded(training.job, f"train {name}")
    checkpoint = trainings.training_checkpoint(training)
    if checkpoint is None:
        raise LoopError(f"train {name}: job #{job.pk} succeeded but registered no checkpoint")
    evals = job.metrics["training"].get("eval_latest") or {}
    return Trained(checkpoint=checkpoint, steps=job.progress_done, evals=evals)


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"
