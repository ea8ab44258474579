"""The lab (issue 16; DESIGN.md step 9): several preference methods trained from one start
on one prompt pool and evaluated on the same held-out sets, in one record.

What the methods share runs once, and `LabRun.state` records it so that a resumed lab skips
it: the start, the held-out world and the pool, the start's evaluation, the start's K
samples with their oracle ratings (dpo, kto, mpo and mdpo train on them), and the BDHS
answers. The samples are rated before any BDHS answer exists, so that the rated strategies
never see one. Then each method in turn: its training set (curated once where methods share
one), a training run from the start with the loop's settings, the evaluation. A method that
fails is recorded with its error and the next one runs; resuming runs what is not done.

It runs in this process (`manage.py lab`) or as one job on the gpu queue (the lab page),
through the same services as the pages, as run_loop does; its stages are run_loop's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from datasets_app.models import DatasetVersion, Source
from training.core import lab_results
from training.core.generation import SamplingParams
from training.core.generation.bdhs import BdhsParams
from training.core.recipes.config import PRESETS
from training.models import Checkpoint, EvaluationRun, LabRun
from training.services import generation, loop
from training.services.loop import (
    DPO_OVERRIDES,
    Curated,
    Evaluated,
    Imported,
    LoopConfig,
    LoopError,
    Timer,
    World,
)
from training.services.start import StartRecipe
from workers.jobs import JobCancelled, JobRun, job_create, job_enqueue, job_running
from workers.models import Job

METHODS = tuple(lab_results.METHODS)
DEFAULT_STEPS = DPO_OVERRIDES["max_steps"]
# The paper's ratio. Measured on this world (issue 16's first sitting): rho 0.99 gave
# +17.8 points on POPE, rho 0 (guidance and the yes/no swap only) +24.2; both are offered.
DEFAULT_BDHS_RHO = 0.99
# BDHS writes one sentence per reference sentence; the pool's answers are one word.
BDHS_SENTENCE_TOKENS = 4
# The methods that train on the start's rated samples (online DPO asks the pairs' prompts).
RATED = ("dpo", "kto", "mpo", "mdpo", "reward_model", "online_dpo", "mixed_dpo")
# Methods that sample while they train: their tokens come from the run's metrics.
SAMPLE_IN_TRAINING = ("grpo", "online_dpo", "mixed_dpo")
# Measured on the default lab's pairs (full fine-tuning, lr 1e-4, batch 16): held-out
# pairwise accuracy 0.72 after 300 steps, 0.78 after 600 (lr 3e-4), 0.81 after 1000.
REWARD_STEPS_PER_STEP = 10 / 3  # 1000 at the default --steps 300

# Method -> (the training set it uses, the recipe, the overrides on top of the loop's).
_DPO = {k: v for k, v in DPO_OVERRIDES.items() if k != "max_steps"}
# DPO's own settings (16 rows a step, the chosen answer's NLL beside the sigmoid loss);
# each row is answered K=4 times at every step. Measured on the default lab: this gave
# online DPO +20.0 [+17.3, +22.4] and mixed DPO +20.3 [+17.6, +22.8] points on POPE;
# 4 rows a step and the sigmoid loss alone gave +4.0 and +3.8, and cost ScienceQA its
# answer format (190 of 300 answers unparsed).
_ONLINE = {
    **_DPO,
    "num_generations": 4,
    "max_completion_length": 4,
    "generation_temperature": 0.7,
}
PLANS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "dpo": ("pairs", "dpo", _DPO),
    "bdhs": ("bdhs", "dpo", _DPO),
    "corrupted": ("corrupted", "dpo", _DPO),
    "kto": ("kto", "kto", {"learning_rate": _DPO["learning_rate"], "beta": _DPO["beta"]}),
    "mpo": ("pairs", "dpo", {**_DPO, "preset": "mpo", **PRESETS["mpo"]}),
    "mdpo": ("pairs", "mdpo", {"learning_rate": _DPO["learning_rate"], "beta": _DPO["beta"]}),
    # A step is 16 samples: 4 prompts x K=4, the group GRPO's advantage is taken over.
    # Measured on the default lab's start and pool: lr 3e-4 +9.3 [+7.6, +10.9] and +17.0
    # [+14.9, +19.1] points on POPE (two draws), lr 1e-4 +3.6 [+2.8, +4.4]; asked without
    # the short-answer instruction the start answers wrongly at first (reward 0.04) and
    # GRPO collapsed to "yes" (-10.3).
    "grpo": (
        "reference",
        "grpo",
        {"learning_rate": 3e-4, "max_completion_length": 4, "generation_temperature": 0.7},
    ),
    "reward_model": ("pairs", "reward", {"learning_rate": 1e-4, "reward_head": "likelihood"}),
    # Ranked by the verifiable reward: the prompt's reference answer.
    "online_dpo": ("pairs", "online_dpo", {**_ONLINE, "mixed_lambda": 0.0}),
    "mixed_dpo": ("pairs", "online_dpo", {**_ONLINE, "mixed_lambda": 0.5}),
}
# Training set -> (strategy, parameters).
SETS: dict[str, tuple[str, dict[str, Any]]] = {
    "pairs": ("best_vs_random_gap", {}),
    "bdhs": ("bdhs", {}),
    "corrupted": ("corrupted", {}),
    "kto": ("kto", {}),
    # Asked as evaluation asks them: GRPO samples answers to these prompts.
    "reference": ("reference_sft", {"ask_as": loop.GENERATION_TEMPLATES[loop.SHORT_ANSWER][0]}),
}


@dataclass(frozen=True)
class LabConfig:
    """The command's options, or the page's form; stored with the record for a resume."""

    tag: str
    root: Path
    methods: tuple[str, ...] = METHODS
    start_id: int | None = None  # a registered checkpoint; None: the instruction-tuned start
    eval_images: int = loop.DEFAULT_EVAL_IMAGES
    pool_images: int = loop.DEFAULT_POOL_IMAGES
    k: int = loop.K
    temperature: float = loop.TEMPERATURE
    steps: int = DEFAULT_STEPS
    bdhs_rho: float = DEFAULT_BDHS_RHO
    seed: int = 0
    start: StartRecipe = field(default_factory=StartRecipe)

    @classmethod
    def new(cls, **options: Any) -> LabConfig:
        tag = f"lab-{timezone.now():%Y%m%d-%H%M%S}"
        root = Path(settings.CHECKPOINT_ROOT) / "labs" / tag
        return cls(tag=tag, root=root, **options)

    def check(self) -> None:
        problems = []
        try:
            lab_results.parse_methods(",".join(self.methods))
        except ValueError as exc:
            problems.append(str(exc))
        try:
            self.loop_config().check()
        except LoopError as exc:
            problems.append(str(exc).replace("--dpo-steps and --sft-steps", "--steps"))
        if not 0 <= self.bdhs_rho <= 1:
            problems.append("--bdhs-rho must be in [0, 1]")
        if self.start_id is not None and not Checkpoint.objects.filter(pk=self.start_id).exists():
            problems.append(f"no checkpoint with id {self.start_id}")
        if problems:
            raise LoopError("; ".join(problems))

    def loop_config(self) -> LoopConfig:
        """The loop's stages read their options from a LoopConfig."""
        return LoopConfig(
            tag=self.tag,
            root=self.root,
            eval_images=self.eval_images,
            pool_images=self.pool_images,
            rounds=1,
            seed=self.seed,
            k=self.k,
            temperature=self.temperature,
            dpo_steps=self.steps,
            sft_steps=self.steps,
            start=self.start,
        )

    def record(self) -> dict[str, Any]:
        values = asdict(self)
        values["root"] = str(self.root)
        values["methods"] = list(self.methods)
        values["headline"] = loop.HEADLINE
        return values

    @classmethod
    def from_record(cls, values: dict[str, Any]) -> LabConfig:
        values = {k: v for k, v in values.items() if k != "headline"}
        start = values.pop("start")
        prior = type(StartRecipe().prior)(**start.pop("prior"))
        return cls(
            **{**values, "root": Path(values["root"]), "methods": tuple(values["methods"])},
            start=StartRecipe(**start, prior=prior),
        )


# --- launching ------------------------------------------------------------------------------


def lab_launch(*, config: LabConfig, user: Any = None, enqueue: bool = True) -> LabRun:
    """A lab record and its job on the gpu queue (queued once the transaction commits)."""
    config.check()
    methods = {m: {"status": "pending"} for m in config.methods}
    with transaction.atomic():
        job = _job(config.tag, config.methods, user)
        lab = LabRun.objects.create(
            tag=config.tag,
            config=config.record(),
            state={"methods": methods},
            job=job,
            created_by=user,
        )
        job.params = {"lab_id": lab.pk}
        job.save(update_fields=["params"])
        if enqueue:
            job_enqueue(job)
    return lab


def lab_resume(*, lab: LabRun, user: Any = None, enqueue: bool = True) -> LabRun:
    """Run again what a lab has not done: its failed and pending methods, with a new job."""
    with transaction.atomic():
        lab = LabRun.objects.select_for_update().get(pk=lab.pk)
        why_not = lab_not_resumable(lab)
        if why_not:
            raise ValueError(why_not)
        methods = lab.state.get("methods", {})
        todo = [m for m, s in methods.items() if s.get("status") != "done"]
        for method in todo:
            methods[method] = {"status": "pending"}
        lab.job = _job(lab.tag, todo, user, resumed=True)
        lab.job.params = {"lab_id": lab.pk}
        lab.job.save(update_fields=["params"])
        lab.status, lab.error, lab.finished_at = LabRun.Status.QUEUED, "", None
        lab.save(update_fields=["job", "status", "error", "finished_at", "state"])
        if enqueue:
            job_enqueue(lab.job)
    return lab


def lab_not_resumable(lab: LabRun) -> str:
    """Why `lab` cannot be resumed now, or "" when it can: its job has ended (a lab whose
    worker died counts) and some method is not done."""
    if lab.job is not None and not lab.job.is_finished:
        return f"lab {lab.tag} is {lab.job.status}: wait for it or cancel it"
    if lab.status == LabRun.Status.SUCCEEDED:
        return f"lab {lab.tag} has every method done: nothing to resume"
    if lab.job is None:
        return f"lab {lab.tag} was never started"
    return ""


def _job(tag: str, methods: Any, user: Any, *, resumed: bool = False) -> Job:
    verb = "resume" if resumed else "lab"
    return job_create(
        kind=Job.Kind.LAB,
        title=f"{verb} {tag}: {', '.join(methods)}"[:200],
        total=len(methods),
        created_by=user,
    )


# --- running --------------------------------------------------------------------------------


@dataclass
class LabReport:
    lab: LabRun

    @property
    def result(self) -> dict[str, Any]:
        return self.lab.result

    @property
    def record_url(self) -> str:
        return reverse("training:lab", args=[self.lab.pk])


def lab_run(*, job_id: int, log: Callable[[str], None] = lambda line: None) -> LabRun | None:
    """The lab job's body: resumable, since every stage's outcome is in the record."""
    with job_running(job_id, resumable=True) as run:
        if run is None:
            return None
        lab = LabRun.objects.get(pk=run.job.params["lab_id"])
        return _Lab(lab, run, log).run()
    return None


class _Lab:
    """One attempt at a lab: reads what is done from `lab.state`, does the rest, and
    writes each outcome back as soon as it is known."""

    def __init__(self, lab: LabRun, run: JobRun, log: Callable[[str], None]) -> None:
        self.lab, self.job_run = lab, run
        self.config = LabConfig.from_record(lab.config)
        self.loop = self.config.loop_config()
        self.state = lab.state
        self.shared: dict[str, Any] = self.state.setdefault("shared", {})
        self.evals: dict[str, dict[str, int]] = self.state.setdefault("evals", {})

        def both(line: str) -> None:
            log(line)
            run.log(line)

        self.timer = Timer(both)

    def run(self) -> LabRun:
        started = time.monotonic()
        self._set(status=LabRun.Status.RUNNING)
        try:
            start = self._stage("the start", self._start)
            self._save_shared(start_id=start.pk)
            world = self._stage("make the held-out world and the pool", loop.make_world, self.loop)
            data = self._stage("import the pool", self._pool, world)
            self._evaluate("start", start, world)
        except JobCancelled:
            self._end(LabRun.Status.FAILED, error="cancelled", started=started)
            raise
        except Exception as exc:
            self._end(LabRun.Status.FAILED, error=f"{type(exc).__name__}: {exc}", started=started)
            raise LoopError(f"{type(exc).__name__}: {exc}") from exc
        todo = [m for m in self.config.methods if self._method_state(m)["status"] != "done"]
        self.job_run.set_total(len(self.config.methods))
        self.job_run.job.progress_done = len(self.config.methods) - len(todo)
        try:
            for method in todo:
                try:
                    self._method(method, start, world, data)
                except JobCancelled:
                    raise
                except Exception as exc:  # a failed method does not stop the others
                    self._method_failed(method, f"{type(exc).__name__}: {exc}")
                self.job_run.advance(force=True)  # raises JobCancelled when asked to stop
        except JobCancelled:
            for method in todo:
                if self._method_state(method)["status"] == "running":
                    self._method_failed(method, "cancelled")
            self._end(LabRun.Status.FAILED, error="cancelled", started=started)
            raise
        return self._finish(world, started)

    # -- the shared stages -------------------------------------------------------------------

    def _start(self) -> _Made:
        if self.config.start_id is not None:
            checkpoint = Checkpoint.objects.get(pk=self.config.start_id)
            return _Made(checkpoint, f"{checkpoint.name} (given)")
        built = loop.build_start(self.loop)
        return _Made(built.checkpoint, built.detail)

    def _pool(self, world: World) -> _Made:
        source_id = self.shared.get("source_id")
        if source_id is not None and Source.objects.filter(pk=source_id).exists():
            source = Source.objects.get(pk=source_id)
            made = Imported(source=source, prompts=source.prompts.count())
        else:
            made = loop.import_pool(self.loop, world)
            self._save_shared(source_id=made.source.pk)
        return _Made(made, made.detail)

    def _samples(self, data: Imported, start: Checkpoint) -> dict[str, Any]:
        """The start's K samples, rated by the oracle: once for every rated method."""
        if "samples" not in self.shared:
            generated = self._stage(
                f"generate K={self.config.k} from the start",
                loop.generate,
                self.loop,
                data,
                start,
            )
            judged = self._stage(
                "oracle judge (rate the start)", loop.rate, data, loop._oracle(), start
            )
            self._save_shared(
                samples={
                    "generated_tokens": generated.generated_tokens,
                    "judge_calls": judged.calls,
                    "judge_cost_usd": judged.cost_usd,
                }
            )
        return self.shared["samples"]

    def _bdhs(self, data: Imported, start: Checkpoint) -> dict[str, Any]:
        """One BDHS answer per pool prompt, from the start (no judge)."""
        if "bdhs" not in self.shared:
            tokens = self._stage("BDHS answers from the start", self._bdhs_generate, data, start)
            self._save_shared(bdhs={"generated_tokens": tokens, "judge_calls": 0})
        return self.shared["bdhs"]

    def _bdhs_generate(self, data: Imported, start: Checkpoint) -> _Made:
        template, max_new_tokens = loop.GENERATION_TEMPLATES[loop.SHORT_ANSWER]
        params = SamplingParams(
            k=1,
            temperature=self.config.temperature,
            max_new_tokens=max_new_tokens,
            seed=self.config.seed,
            template=template,
        )
        bdhs = BdhsParams(rho=self.config.bdhs_rho, max_new_tokens=BDHS_SENTENCE_TOKENS)
        job = generation.generation_launch(
            checkpoint=start, selection=data.selection, params=params, bdhs=bdhs, enqueue=False
        )
        generation.generation_run(job_id=job.pk)
        job = loop._succeeded(job, "BDHS answers from the start")
        m = job.metrics
        detail = (
            f"{m.get('completions', 0)} answers, mean tries {m.get('mean_tries')}, "
            f"similarity {m.get('mean_similarity')}"
        )
        return _Made(m.get("generated_tokens", 0), detail)

    def _set_for(self, key: str, data: Imported, start: Checkpoint) -> Curated:
        strategy, params = SETS[key]
        version_id = self.shared.get("sets", {}).get(key)
        if version_id is not None:
            version = DatasetVersion.objects.filter(pk=version_id).first()
            if version is not None:
                return Curated(key=key, strategy=strategy, version=version)
        curated = self._stage(
            f"curate {key} ({strategy})",
            loop._curate,
            self.loop,
            data,
            key,
            strategy,
            [start],
            params=params,
        )
        if curated.version is None:
            raise LoopError(f"the {key} set has no rows: {curated.empty}")
        self._save_shared(sets={**self.shared.get("sets", {}), key: curated.version.pk})
        return curated

    # -- one method ----------------------------------------------------------------------------

    def _method(self, method: str, start: Checkpoint, world: World, data: Imported) -> None:
        key, recipe, overrides = PLANS[method]
        self._method_state(method).update(status="running", error="")
        self._save_state()
        costs: dict[str, Any] = {"judge_calls": 0, "judge_cost_usd": 0.0, "generated_tokens": 0}
        if method in RATED:
            costs.update(self._samples(data, start))
        if method == "bdhs":
            costs.update(self._bdhs(data, start))
        dataset = self._set_for(key, data, start)
        steps = self.config.steps
        if method == "reward_model":
            steps = round(steps * REWARD_STEPS_PER_STEP)
        began = time.monotonic()
        trained = self._stage(
            f"train {method} ({recipe})",
            loop._train,
            self.loop,
            method,
            recipe,
            dataset,
            start,
            {**overrides, "max_steps": steps},
        )
        costs["train_s"] = round(time.monotonic() - began, 1)
        progress = trained.checkpoint.training_job.job.metrics.get("training") or {}
        if method in SAMPLE_IN_TRAINING:
            costs = _training_costs(method, progress, costs)
        done: dict[str, Any] = {
            "status": "done",
            "checkpoint_id": trained.checkpoint.pk,
            "version_id": dataset.version.pk if dataset.version else None,
            "costs": costs,
            "logps": trained.logps,
        }
        if method == "reward_model":
            done.update(_reward_model_accuracy(progress))
        else:
            self._evaluate(method, trained.checkpoint, world)
        self.state["methods"][method] = done
        self._save_state()

    def _evaluate(self, role: str, checkpoint: Checkpoint, world: World) -> None:
        if role in self.evals and self._runs(role):
            return
        evaluated = self._stage(f"evaluate {role}", loop.evaluate, world, {role: checkpoint})
        self.evals[role] = {task: run.pk for task, run in evaluated.runs[role].items()}
        self._save_state()

    def _runs(self, role: str) -> dict[str, EvaluationRun]:
        ids = self.evals.get(role, {})
        runs = EvaluationRun.objects.in_bulk(list(ids.values()))
        return {task: runs[pk] for task, pk in ids.items() if pk in runs}

    def _method_state(self, method: str) -> dict[str, Any]:
        return self.state.setdefault("methods", {}).setdefault(method, {"status": "pending"})

    def _method_failed(self, method: str, error: str) -> None:
        self.timer.log(f"{method} failed: {error}")
        self.state["methods"][method] = {"status": "failed", "error": error}
        self._save_state()

    # -- the record ----------------------------------------------------------------------------

    def _finish(self, world: World, started: float) -> LabRun:
        methods = self.state["methods"]
        done = [m for m in self.config.methods if methods[m]["status"] == "done"]
        failed = {m: methods[m]["error"] for m in self.config.methods if m not in done}
        if not done:
            errors = "; ".join(f"{m}: {e}" for m, e in failed.items())
            return self._end(LabRun.Status.FAILED, error=errors, started=started)
        trained = [m for m in done if m in lab_results.POLICY_METHODS]
        roles = ["start", *trained]
        runs = {role: self._runs(role) for role in roles}
        policies = {"start": Checkpoint.objects.get(pk=self.shared["start_id"])}
        policies.update(
            {m: Checkpoint.objects.get(pk=methods[m]["checkpoint_id"]) for m in trained}
        )
        evaluated = Evaluated(runs=runs)
        wall_s = self._wall_s(started)
        result = loop.loop_result(evaluated, policies, wall_s=wall_s)
        for role, entry in result["checkpoints"].items():  # the lab reads POPE's yes-ratio too
            entry["pope"]["yes_ratio"] = runs[role]["pope"].metrics.get("yes_ratio")
        result["costs"] = {m: methods[m]["costs"] for m in done}
        if "reward_model" in done:
            accuracy = methods["reward_model"].get("heldout_accuracy")
            result["reward_model"] = {"heldout_accuracy": accuracy}
        if failed:
            result["failed"] = failed
        lab_results.check_result(result)
        breakdown = loop.loop_breakdown(evaluated, world)
        logps = {m: methods[m]["logps"] for m in done if methods[m].get("logps")}
        status = LabRun.Status.PARTIAL if failed else LabRun.Status.SUCCEEDED
        error = "; ".join(f"{m}: {e}" for m, e in failed.items())
        return self._end(
            status,
            error=error,
            started=started,
            result=result,
            breakdown=breakdown,
            logps=logps,
        )

    def _wall_s(self, started: float) -> float:
        """Every attempt's time: the earlier attempts' stages and this one's wall clock."""
        earlier = sum(seconds for _, seconds, _ in self.lab.stages)
        return round(earlier + time.monotonic() - started, 1)

    def _end(self, status: str, *, error: str, started: float, **fields: Any) -> LabRun:
        stages = [*self.lab.stages, *([n, round(s, 2), d] for n, s, d in self.timer.stages)]
        self._set(
            status=status,
            error=error,
            stages=stages,
            finished_at=timezone.now(),
            state=self.state,
            **fields,
        )
        return self.lab

    def _set(self, **fields: Any) -> None:
        LabRun.objects.filter(pk=self.lab.pk).update(**fields)
        self.lab.refresh_from_db()

    def _save_state(self) -> None:
        LabRun.objects.filter(pk=self.lab.pk).update(state=self.state)

    def _save_shared(self, **values: Any) -> None:
        self.shared.update(values)
        self._save_state()

    def _stage(self, name: str, stage: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        made = self.timer(name, stage, *args, **kw)
        return made.value if isinstance(made, _Made) else made


def _training_costs(method: str, progress: dict[str, Any], costs: dict[str, Any]) -> dict:
    """`costs` plus what a method spent while it trained: the tokens online DPO sampled (it
    logs a running count; GRPO logs mean lengths only, so its count stays unknown) and the
    calls and cost of a judge that ranked its samples."""
    latest = progress.get("latest") or {}
    sampled = latest.get("online/generated_tokens")
    if sampled is None:
        points = [p for p in progress.get("history") or [] if "online/generated_tokens" in p]
        sampled = points[-1]["online/generated_tokens"] if points else None
    tokens = None
    if method != "grpo" and sampled is not None:
        tokens = int(costs.get("generated_tokens") or 0) + int(sampled)
    judge_cost = float(costs.get("judge_cost_usd") or 0.0)
    return {
        **costs,
        "generated_tokens": tokens,
        "judge_calls": int(costs.get("judge_calls") or 0)
        + int(latest.get("online/judge_calls") or 0),
        "judge_cost_usd": round(judge_cost + float(latest.get("online/judge_cost_usd") or 0), 6),
    }


def _reward_model_accuracy(progress: dict[str, Any]) -> dict[str, Any]:
    """The reward model's last held-out pairwise accuracy (the oracle's ranking of the
    held-out pairs is the truth it is measured against)."""
    evals = [p for p in progress.get("eval_history") or [] if "eval_rewards/accuracies" in p]
    return {"heldout_accuracy": evals[-1]["eval_rewards/accuracies"] if evals else None}


@dataclass(frozen=True)
class _Made:
    """A stage's outcome that is not one of the loop's records: a value and its line."""

    value: Any
    detail: str


def lab_config_from_options(**options: Any) -> LabConfig:
    """A LabConfig from the command's or the form's values, the start given by name."""
    start = options.pop("start_name", None)
    if start:
        checkpoint = Checkpoint.objects.filter(name=start).first()
        if checkpoint is None:
            raise LoopError(f"no checkpoint named {start!r}")
        options["start_id"] = checkpoint.pk
    family = options.pop("family", "llava")
    return LabConfig.new(**options, start=replace(StartRecipe(), family=family))
