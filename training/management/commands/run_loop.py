from django.core.management.base import BaseCommand, CommandError

from training.services.loop import DEFAULT_IMAGES, LoopError, pct, run_loop


class Command(BaseCommand):
    help = (
        "Walk the whole loop on the tiny model and the shapes world, in this process: data, "
        "generation, oracle judging, curation, SFT, DPO, evaluation and the comparison."
    )

    def add_arguments(self, parser):
        parser.add_argument("--images", type=int, default=DEFAULT_IMAGES)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--k", type=int, default=4, help="samples per prompt")

    def handle(self, *args, **o):
        if o["images"] < 20:
            raise CommandError("--images must be at least 20 (10% of them are held out)")
        try:
            report = run_loop(images=o["images"], seed=o["seed"], k=o["k"], log=self.stdout.write)
        except LoopError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write("")
        width = max(len(name) for name, _, _ in report.stages)
        for name, seconds, _ in report.stages:
            self.stdout.write(f"  {name:<{width}}  {seconds:7.1f} s")
        self.stdout.write(f"  {'total':<{width}}  {report.total_s:7.1f} s")
        for task, by_checkpoint in report.accuracy.items():
            shown = ", ".join(f"{name} {pct(acc)}" for name, acc in by_checkpoint.items())
            self.stdout.write(f"  held-out {task} accuracy: {shown}")
        self.stdout.write(self.style.SUCCESS(f"compare them at {report.compare_url}"))
