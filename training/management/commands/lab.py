import json

from django.core.management.base import BaseCommand, CommandError

from training.core import lab_results
from training.core.tiny_models import TINY_FAMILIES
from training.models import LabRun
from training.services import lab as labs
from training.services.loop import LoopError


class Command(BaseCommand):
    help = (
        "Train several preference methods (dpo, bdhs, corrupted, kto, mpo, mdpo) from one start "
        "on one prompt pool, evaluate each on the same held-out ScienceQA and POPE sets, and "
        "compare them to the start with paired bootstrap intervals and their costs. Runs here; "
        "the lab page runs the same on the gpu queue. With --json the last line is the result."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--methods",
            default=",".join(labs.METHODS),
            help=f"comma-separated, run in this order (known: {', '.join(labs.METHODS)})",
        )
        parser.add_argument(
            "--start", help="a registered checkpoint's name (default: the instruction-tuned start)"
        )
        parser.add_argument(
            "--eval-images",
            type=int,
            default=labs.LabConfig.eval_images,
            help="held-out images: one ScienceQA and six POPE items each",
        )
        parser.add_argument(
            "--pool-images", type=int, default=labs.LabConfig.pool_images, help="prompt budget"
        )
        parser.add_argument("--k", type=int, default=labs.LabConfig.k, help="samples per prompt")
        parser.add_argument("--temperature", type=float, default=labs.LabConfig.temperature)
        parser.add_argument(
            "--steps", type=int, default=labs.DEFAULT_STEPS, help="training steps per method"
        )
        parser.add_argument(
            "--bdhs-rho",
            type=float,
            default=labs.DEFAULT_BDHS_RHO,
            help="share of image-token attention BDHS masks (0: guidance and swap only)",
        )
        parser.add_argument("--family", default="llava", choices=sorted(TINY_FAMILIES))
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument(
            "--resume", metavar="LAB", help="a lab's id or tag: run what it has not done"
        )
        parser.add_argument("--json", action="store_true", help="end with the JSON result line")

    def handle(self, *args, **o):
        try:
            if o["resume"]:
                lab = labs.lab_resume(lab=_lab(o["resume"]), enqueue=False)
            else:
                config = labs.lab_config_from_options(
                    methods=lab_results.parse_methods(o["methods"]),
                    start_name=o["start"],
                    eval_images=o["eval_images"],
                    pool_images=o["pool_images"],
                    k=o["k"],
                    temperature=o["temperature"],
                    steps=o["steps"],
                    bdhs_rho=o["bdhs_rho"],
                    seed=o["seed"],
                    family=o["family"],
                )
                lab = labs.lab_launch(config=config, enqueue=False)
            assert lab.job_id is not None
            lab = labs.lab_run(job_id=lab.job_id, log=self.stdout.write) or lab
        except (LoopError, ValueError) as exc:
            raise CommandError(str(exc)) from None
        lab.refresh_from_db()
        self._report(lab)
        if lab.status == LabRun.Status.FAILED:
            raise CommandError(f"the lab failed: {lab.error}")
        if o["json"]:
            self.stdout.write(json.dumps(lab.result))

    def _report(self, lab: LabRun) -> None:
        self.stdout.write("")
        width = max((len(name) for name, _, _ in lab.stages), default=5)
        for name, seconds, _ in lab.stages:
            self.stdout.write(f"  {name:<{width}}  {seconds:7.1f} s")
        result = lab.result
        if result:
            task = result["headline"]
            self.stdout.write(f"\n  {'method':<10} {task:>8}  delta vs start [95% CI]   costs")
            for row in lab_results.table_rows(result):
                costs = row["costs"] or {}
                cost = (
                    f"judge calls {costs['judge_calls']}, {costs['judge_cost_usd']}, "
                    f"train {costs['train_s']} s, tokens {costs['generated_tokens']}"
                    if costs
                    else ""
                )
                self.stdout.write(
                    f"  {row['label']:<10} {row['tasks'][task]['accuracy']:>8}  "
                    f"{row['deltas'][task]:<32} {cost}"
                )
            for method, error in (result.get("failed") or {}).items():
                self.stdout.write(self.style.WARNING(f"  {method} failed: {error}"))
        self.stdout.write(self.style.SUCCESS(f"the record: {labs.LabReport(lab).record_url}"))
        self.stdout.write(f"resume with: manage.py lab --resume {lab.pk}")


def _lab(ref: str) -> LabRun:
    lab = (
        LabRun.objects.filter(pk=int(ref)).first()
        if ref.isdigit()
        else LabRun.objects.filter(tag=ref).first()
    )
    if lab is None:
        raise CommandError(f"no lab {ref!r}")
    return lab
