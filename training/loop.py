"""The whole loop on the tiny model and the shapes world, stage by stage, in this process.

build the tiny model -> make shapes data -> import -> generate K=4 -> oracle judge ->
curate (a rejection-sampling SFT set, a DPO set, the judge-answer SFT set) -> train SFT ->
generate from the SFT checkpoint -> judge -> curate DPO -> train DPO -> evaluate base, SFT
and DPO on the held-out shapes (scienceqa and pope) -> compare.

Every stage goes through the same services (and job rows) as the pages and commands; only
the queue is skipped, each job body running here. Used by `manage.py run_loop` (the demo)
and by the end-to-end test.

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
from typing import Any

from django.conf import settings
from django.utils import timezone

from annotation import services as judging
from annotation.models import JudgeCall, JudgeConfig
from datasets_app import versions
from datasets_app.models import DatasetVersion
from datasets_app.services import prompts_import
from datasets_app.shapes import make_shapes
from training import evaluations, services, trainings
from training.generation import SamplingParams
from training.models import Checkpoint
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


class LoopError(RuntimeError):
    """A stage failed; the message names it and says why."""


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


def _ok(job: Job, stage: str) -> Job:
    job.refresh_from_db()
    if job.status != Job.Status.SUCCEEDED:
        raise LoopError(f"{stage}: job #{job.pk} {job.status}: {job.error}")
    return job


def run_loop(
    *,
    images: int = DEFAULT_IMAGES,
    seed: int = 0,
    k: int = 4,
    log: Callable[[str], None] = lambda line: None,
) -> LoopReport:
    tag = f"loop-{timezone.now():%Y%m%d-%H%M%S}"
    report = LoopReport(tag=tag)
    root = Path(settings.CHECKPOINT_ROOT) / "loops" / tag
    data_dir = root / "shapes"
    report.data_dir = data_dir

    def stage(name: str, body: Callable[[], str]) -> None:
        started = time.monotonic()
        log(f"{name} ...")
        detail = body()
        seconds = time.monotonic() - started
        report.stages.append((name, seconds, detail))
        log(f"{name}: {detail} ({seconds:.1f} s)")

    state: dict[str, Any] = {}

    def build_model() -> str:
        from training.modeling import build_tiny_llava

        path = build_tiny_llava(root / "tiny-llava", seed=seed)
        base = services.checkpoint_register_base(name=f"{tag}-base", model_path=str(path))
        report.checkpoints["base"] = base
        return f"random-weight tiny LLaVA at {path}"

    def shapes() -> str:
        counts = make_shapes(data_dir, n=images, seed=seed)
        return f"{counts['scienceqa']} ScienceQA rows, {counts['pope']} POPE rows"

    def import_data() -> str:
        result = prompts_import(
            path=data_dir / "scienceqa.parquet", source_name=f"{tag}-shapes", fmt="scienceqa"
        )
        state["source"] = result.source
        return f"{result.source.prompts.count()} prompts"

    def selection() -> dict[str, Any]:
        return {"source_id": state["source"].pk, "split": "train"}

    def generate(name: str) -> Callable[[], str]:
        def body() -> str:
            params = SamplingParams(
                k=k, temperature=1.0, max_new_tokens=16, seed=seed, template="zero_shot_mc"
            )
            job = services.generation_launch(
                checkpoint=report.checkpoints[name],
                selection=selection(),
                params=params,
                enqueue=False,
            )
            services.generation_run(job_id=job.pk)
            job = _ok(job, f"generate from {name}")
            return f"{job.metrics.get('completions')} completions"

        return body

    def judge(name: str, mode: str = JudgeCall.Mode.RATE) -> Callable[[], str]:
        def body() -> str:
            oracle, _ = JudgeConfig.objects.get_or_create(
                name="oracle (rules)", defaults={"provider": "oracle", "model": "rules-v1"}
            )
            state["oracle"] = oracle
            job = judging.judge_launch(
                judge_config=oracle,
                selection=selection(),
                checkpoint_id=report.checkpoints[name].pk if mode == JudgeCall.Mode.RATE else None,
                mode=mode,
                enqueue=False,
            )
            judging.judge_run(job_id=job.pk)
            job = _ok(job, f"judge {name}")
            return f"{job.progress_done} prompts ({mode})"

        return body

    def curate(key: str, strategy: str, *checkpoints: str, **kwargs: Any) -> Callable[[], str]:
        def body() -> str:
            ids = [report.checkpoints[c].pk for c in checkpoints] or None
            try:
                version = versions.dataset_version_build(
                    name=f"{tag}-{key}",
                    strategy=strategy,
                    selection=selection(),
                    checkpoint_ids=ids,
                    filters={"eval_fraction": 0.1},
                    seed=seed,
                    **kwargs,
                )
            except ValueError as exc:  # e.g. no sample of a random model is right
                report.versions[key] = None
                return f"no rows: {exc}"
            report.versions[key] = version
            return f"{version} with {version.row_count} rows ({strategy})"

        return body

    def train(
        name: str, recipe: str, version_key: str, parent: str, overrides: dict[str, Any]
    ) -> Callable[[], str]:
        def body() -> str:
            version = report.versions.get(version_key)
            if version is None:
                raise LoopError(f"train {name}: the {version_key} set has no rows")
            training = trainings.training_launch(
                recipe=recipe,
                dataset_version=version,
                base_checkpoint=report.checkpoints[parent],
                overrides={**TRAIN_DEFAULTS, **overrides},
                name=f"{tag}-{name}",
                enqueue=False,
            )
            trainings.training_run(job_id=training.job_id, poll_s=0.5)
            job = _ok(training.job, f"train {name}")
            checkpoint = trainings.training_checkpoint(training)
            assert checkpoint is not None
            report.checkpoints[name] = checkpoint
            evals = job.metrics["training"].get("eval_latest") or {}
            shown = ", ".join(f"{k} {v:.3f}" for k, v in evals.items() if "runtime" not in k)
            return f"{job.progress_done} steps; {shown}"

        return body

    def evaluate_all() -> str:
        lines = []
        for task, path, extra in (
            ("scienceqa", data_dir / "scienceqa.parquet", {"split": "test", "prompt": "zero_shot"}),
            ("pope", data_dir / "pope.parquet", {}),
        ):
            report.accuracy[task] = {}
            for name in ("base", "sft", "dpo"):
                run = evaluations.evaluation_launch(
                    checkpoint=report.checkpoints[name],
                    task=task,
                    data=str(path),
                    max_new_tokens=16,
                    enqueue=False,
                    **extra,
                )
                evaluations.evaluation_run(job_id=run.job_id)
                _ok(run.job, f"evaluate {name} on {task}")
                run.refresh_from_db()
                report.accuracy[task][name] = run.metrics.get("accuracy")
            lines.append(
                f"{task} accuracy "
                + ", ".join(f"{n} {_pct(a)}" for n, a in report.accuracy[task].items())
            )
        return "; ".join(lines)

    stage("build the tiny model", build_model)
    stage("make shapes data", shapes)
    stage("import", import_data)
    stage(f"generate K={k} from base", generate("base"))
    stage("oracle judge (rate base)", judge("base"))
    stage("oracle judge (answers)", judge("base", JudgeCall.Mode.ANSWER))
    # min_score 12 of 20: a right, direct, coherent answer (the oracle sums 4 + 4 + 4 for it).
    rs = {"params": {"min_score": 12}}
    stage(
        "curate rejection-sampling SFT (base)",
        curate("rs-base", "rejection_sampling", "base", **rs),
    )
    stage("curate DPO (base)", curate("dpo-base", "best_vs_worst", "base"))
    answers = {"answer_judge_id": state["oracle"].pk}
    stage("curate judge-answer SFT", curate("sft", "judge_answer_sft", **answers))
    stage("train SFT", train("sft", "sft", "sft", "base", SFT_OVERRIDES))
    stage(f"generate K={k} from SFT", generate("sft"))
    stage("oracle judge (rate SFT)", judge("sft"))
    stage(
        "curate rejection-sampling SFT (SFT)", curate("rs-sft", "rejection_sampling", "sft", **rs)
    )
    stage("curate DPO (SFT)", curate("dpo", "best_vs_worst", "sft"))
    if report.versions.get("dpo") is None:  # every SFT sample scored alike: pair with the base
        stage("curate DPO (SFT + base)", curate("dpo", "best_vs_worst", "sft", "base"))
    stage("train DPO", train("dpo", "dpo", "dpo", "sft", DPO_OVERRIDES))
    stage("evaluate base, SFT, DPO", evaluate_all)
    return report


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"
