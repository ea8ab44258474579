import json

from django.core.management.base import BaseCommand, CommandError

from training.core.tiny_models import TINY_FAMILIES
from training.services.loop import (
    DEFAULT_EVAL_IMAGES,
    DEFAULT_POOL_IMAGES,
    DEFAULT_ROUNDS,
    DPO_OVERRIDES,
    SFT_OVERRIDES,
    TEMPERATURE,
    K,
    LoopConfig,
    LoopError,
    pct,
    run_loop,
)
from training.services.start import StartRecipe


class Command(BaseCommand):
    help = (
        "From the instruction-tuned start (built once, cached): sample K answers per prompt, "
        "rate them with the oracle, curate DPO / rejection-sampling / SteerLM sets, train each, "
        "run further DPO rounds, and evaluate every checkpoint on held-out ScienceQA and POPE "
        "against the start. With --json the last line is the results as one JSON object."
    )

    def add_arguments(self, parser):
        parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="DPO rounds")
        parser.add_argument(
            "--eval-images",
            type=int,
            default=DEFAULT_EVAL_IMAGES,
            help="held-out images: one ScienceQA and six POPE items each",
        )
        parser.add_argument(
            "--pool-images", type=int, default=DEFAULT_POOL_IMAGES, help="prompts sampled on"
        )
        parser.add_argument("--k", type=int, default=K, help="samples per prompt")
        parser.add_argument("--temperature", type=float, default=TEMPERATURE)
        parser.add_argument("--dpo-steps", type=int, default=DPO_OVERRIDES["max_steps"])
        parser.add_argument("--sft-steps", type=int, default=SFT_OVERRIDES["max_steps"])
        parser.add_argument(
            "--multiple-choice",
            action="store_true",
            help="multiple-choice prompts in the pool too (less ScienceQA tax, less POPE gain)",
        )
        parser.add_argument(
            "--family",
            default="llava",
            choices=sorted(TINY_FAMILIES),
            help="the tiny model family the start is built from",
        )
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--json", action="store_true", help="end with the JSON results line")

    def handle(self, *args, **o):
        try:
            config = LoopConfig.new(
                eval_images=o["eval_images"],
                pool_images=o["pool_images"],
                rounds=o["rounds"],
                seed=o["seed"],
                k=o["k"],
                temperature=o["temperature"],
                dpo_steps=o["dpo_steps"],
                sft_steps=o["sft_steps"],
                multiple_choice=o["multiple_choice"],
                start=StartRecipe(family=o["family"]),
            )
            report = run_loop(config=config, log=self.stdout.write)
        except LoopError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write("")
        width = max(len(name) for name, _, _ in report.stages)
        for name, seconds, _ in report.stages:
            self.stdout.write(f"  {name:<{width}}  {seconds:7.1f} s")
        self.stdout.write(f"  {'total':<{width}}  {report.total_s:7.1f} s")
        result = report.result
        for task in ("scienceqa", "pope"):
            shown = ", ".join(
                f"{role} {pct(scores[task]['accuracy'])}"
                for role, scores in result["checkpoints"].items()
            )
            self.stdout.write(f"  held-out {task} accuracy: {shown}")
        for role, by_task in result["deltas"].items():
            delta = by_task.get(result["headline"])
            if delta:
                low, high = delta["ci95"]
                self.stdout.write(
                    f"  {role} vs start on {result['headline']}: {100 * delta['delta']:+.1f} "
                    f"points, 95% CI [{100 * low:+.1f}, {100 * high:+.1f}]"
                )
        self.stdout.write(self.style.SUCCESS(f"the record: {report.record_url}"))
        self.stdout.write(f"compare them at {report.compare_url}")
        if o["json"]:
            self.stdout.write(json.dumps(result))
