from django.core.management.base import BaseCommand, CommandError

from config.commands import object_by_name_or_id
from datasets_app.services.exports import dataset_version_by_spec
from training.core.evaluation import parse_evaluation_specs
from training.core.recipes.config import PRESETS, RECIPES, parse_overrides
from training.core.runs import ZERO_STAGES
from training.models import Checkpoint
from training.services import trainings
from workers.models import Job
from workers.progress import run_here_with_progress


class Command(BaseCommand):
    help = (
        "Train a checkpoint from a dataset version: here with a progress line, or --enqueue "
        "on the gpu queue. Example: train --recipe dpo --dataset shapes-dpo@1 --base tiny-llava "
        "--preset seed003 --set learning_rate=5e-5 --set max_steps=200"
    )

    def add_arguments(self, parser):
        parser.add_argument("--recipe", required=True, choices=sorted(RECIPES))
        parser.add_argument("--dataset", required=True, help="NAME@VERSION (or NAME: the latest)")
        parser.add_argument("--base", required=True, help="base checkpoint name or id")
        parser.add_argument("--preset", choices=sorted(PRESETS))
        parser.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="a TrainConfig field (repeatable); values are read as JSON",
        )
        parser.add_argument("--gpus", type=int, default=1)
        parser.add_argument("--zero", choices=sorted(ZERO_STAGES))
        parser.add_argument("--name", default="", help="run and checkpoint name")
        parser.add_argument(
            "--evaluate",
            action="append",
            default=[],
            metavar="'TASK DATA [key=value ...]'",
            help="an evaluation to run on the checkpoint when training ends (repeatable)",
        )
        parser.add_argument("--enqueue", action="store_true", help="queue it on the gpu queue")

    def handle(self, *args, **o):
        base = object_by_name_or_id(Checkpoint, o["base"], "checkpoint")
        try:
            version = dataset_version_by_spec(o["dataset"])
            evaluations = parse_evaluation_specs(o["evaluate"])
            training = trainings.training_launch(
                recipe=o["recipe"],
                dataset_version=version,
                base_checkpoint=base,
                preset=o["preset"],
                overrides=parse_overrides(o["set"]),
                gpus=o["gpus"],
                zero=o["zero"],
                name=o["name"],
                evaluations=evaluations,
                enqueue=o["enqueue"],
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        job = training.job
        if o["enqueue"]:
            self.stdout.write(f"training {training.name} queued on gpu (job {job.pk})")
            return
        self.stdout.write(f"training {training.name} (job {job.pk}) in {training.output_dir}")
        run_here_with_progress(
            job, lambda: trainings.training_run(job_id=job.pk), self._progress_line
        )
        checkpoint = trainings.training_checkpoint(training)
        self.stdout.write(self.style.SUCCESS(f"checkpoint {checkpoint.name} registered"))

    def _progress_line(self, job: Job, end: str = "\r") -> None:
        p = job.metrics.get("training") or {}
        latest = p.get("latest") or {}
        evals = p.get("eval_latest") or {}
        parts = [f"step {job.progress_done}/{job.progress_total}"]
        if "loss" in latest:
            parts.append(f"loss {latest['loss']:.4f}")
        if "eval_loss" in evals:
            parts.append(f"eval_loss {evals['eval_loss']:.4f}")
        if "eval_rewards/accuracies" in evals:
            parts.append(f"eval acc {evals['eval_rewards/accuracies']:.3f}")
        if p.get("eta_s"):
            parts.append(f"ETA {p['eta_s']:.0f} s")
        self.stdout.write(" · ".join(parts) + " " * 8, ending=end)
        self.stdout.flush()
