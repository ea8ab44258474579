from django.core.management.base import BaseCommand, CommandError

from annotation.models import JudgeConfig
from config.commands import object_by_name_or_id
from training.core.evaluation import TASKS
from training.core.evaluation.metrics import flatten_metrics
from training.models import Checkpoint
from training.services import evaluations
from workers.models import Job
from workers.progress import run_here_with_progress


class Command(BaseCommand):
    help = (
        "Evaluate a checkpoint on a benchmark file and print the metric table (here, or "
        "--enqueue on the gpu queue). Example: evaluate --checkpoint tiny-llava --task "
        "scienceqa --data var/shapes/scienceqa.parquet --limit 100"
    )

    def add_arguments(self, parser):
        parser.add_argument("--checkpoint", required=True, help="checkpoint name or id")
        parser.add_argument("--task", required=True, choices=sorted(TASKS))
        parser.add_argument("--data", required=True, help="a local file in the task's format")
        parser.add_argument("--prompt", help="scienceqa: lmms (default), zero_shot or cot")
        parser.add_argument("--temperature", type=float, default=0.0)
        parser.add_argument("--samples", type=int, default=1)
        parser.add_argument("--max-new-tokens", type=int)
        parser.add_argument("--limit", type=int)
        parser.add_argument("--split", help="a split (scienceqa) or POPE category")
        parser.add_argument("--all-contexts", action="store_true", help="scienceqa: not only IMG")
        parser.add_argument("--judge", help="judge configuration name or id (judged tasks)")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument(
            "--steer", default="", help="SteerLM attribute string that opens each answer"
        )
        parser.add_argument("--enqueue", action="store_true", help="queue it on the gpu queue")

    def handle(self, *args, **o):
        checkpoint = object_by_name_or_id(Checkpoint, o["checkpoint"], "checkpoint")
        judge = object_by_name_or_id(JudgeConfig, o["judge"], "judge") if o["judge"] else None
        try:
            run = evaluations.evaluation_launch(
                checkpoint=checkpoint,
                task=o["task"],
                data=o["data"],
                prompt=o["prompt"],
                temperature=o["temperature"],
                samples=o["samples"],
                max_new_tokens=o["max_new_tokens"],
                limit=o["limit"],
                split=o["split"],
                all_contexts=o["all_contexts"],
                judge_id=judge.pk if judge else None,
                seed=o["seed"],
                steer=o["steer"],
                enqueue=o["enqueue"],
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if o["enqueue"]:
            self.stdout.write(f"evaluation {run.pk} queued on gpu (job {run.job_id})")
            return
        run_here_with_progress(
            run.job, lambda: evaluations.evaluation_run(job_id=run.job_id), self._progress
        )
        run.refresh_from_db()
        self.stdout.write(f"{run.task} ({run.prompt}) on {checkpoint.name}: {run.item_count} items")
        rows = flatten_metrics(run.metrics)
        width = max(len(name) for name, _ in rows)
        for name, value in rows:
            shown = f"{value:.4f}" if isinstance(value, float) else str(value)
            self.stdout.write(f"  {name:<{width}}  {shown}")

    def _progress(self, job: Job, end: str = "\r") -> None:
        self.stdout.write(f"{job.progress_done}/{job.progress_total} items", ending=end)
        self.stdout.flush()
