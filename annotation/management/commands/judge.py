from django.core.management.base import BaseCommand, CommandError

from annotation.core.judges.runner import RunLimits
from annotation.services import judging
from config.commands import add_source_argument, object_by_name_or_id, source_selection
from training.models import Checkpoint
from workers.models import Job
from workers.progress import run_here_with_progress


class Command(BaseCommand):
    help = (
        "Rate completions with an AI judge: oracle, gemini:MODEL, openai:MODEL, local:PATH, "
        "or score them with a reward model, reward:CHECKPOINT."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--judge",
            required=True,
            help="oracle | gemini:MODEL | openai:MODEL | local:PATH | reward:CHECKPOINT",
        )
        add_source_argument(parser)
        parser.add_argument("--split", default="")
        parser.add_argument("--checkpoint", help="only completions of this checkpoint (name)")
        parser.add_argument("--limit", type=int, help="at most this many prompts")
        parser.add_argument("--k-per-call", type=int, default=4)
        parser.add_argument("--temperature", type=float, default=0.0)
        parser.add_argument("--prompt-version", default="v2")
        parser.add_argument("--base-url", default="", help="an OpenAI-compatible or Gemini proxy")
        parser.add_argument("--concurrency", type=int, default=8)
        parser.add_argument("--rpm", type=float, help="requests per minute")
        parser.add_argument("--tpm", type=float, help="tokens per minute")
        parser.add_argument("--max-cost", type=float, help="stop when the cost reaches this (USD)")
        parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
        parser.add_argument("--enqueue", action="store_true", help="queue it on the judge queue")
        parser.add_argument(
            "--batch",
            action="store_true",
            help="one provider batch at half the price (openai, gemini); failed lines asked online",
        )
        parser.add_argument(
            "--poll-s", type=float, default=30.0, help="seconds between batch status polls"
        )
        parser.add_argument(
            "--mode",
            default="rate",
            choices=["rate", "answer", "pairwise"],
            help="rate the completions, compare them two at a time, or have the judge answer "
            "each question itself",
        )
        parser.add_argument(
            "--both-orders",
            action="store_true",
            help="pairwise: ask each pair in both orders (the position-bias control)",
        )

    def handle(self, *args, **o):
        sources = source_selection(o["source"])
        checkpoint = (
            object_by_name_or_id(Checkpoint, o["checkpoint"], "checkpoint")
            if o["checkpoint"]
            else None
        )
        try:
            config = judging.judge_config_from_spec(
                o["judge"],
                prompt_version=o["prompt_version"],
                temperature=o["temperature"],
                base_url=o["base_url"],
            )
            job = judging.judge_launch(
                judge_config=config,
                selection={
                    **sources,
                    "split": o["split"],
                    "limit": o["limit"],
                },
                checkpoint_id=checkpoint.pk if checkpoint else None,
                k_per_call=o["k_per_call"],
                limits=RunLimits(
                    concurrency=o["concurrency"],
                    requests_per_minute=o["rpm"],
                    tokens_per_minute=o["tpm"],
                    max_cost_usd=o["max_cost"],
                ),
                timeout_s=o["timeout"],
                mode=o["mode"],
                batch=o["batch"],
                both_orders=o["both_orders"],
                poll_s=o["poll_s"],
                enqueue=o["enqueue"],
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if o["enqueue"]:
            self.stdout.write(f"job {job.pk} queued on judge: {job.title}")
            return
        self.stdout.write(f"job {job.pk}: {job.title}")
        run_here_with_progress(job, lambda: judging.judge_run(job_id=job.pk), self._line)

    def _line(self, job: Job, end: str) -> None:
        m = job.metrics
        self.stdout.write(
            f"{job.progress_done}/{job.progress_total} items · {m.get('calls', 0)} calls · "
            f"{m.get('cache_hits', 0)} cached · {m.get('failures', 0)} failed · "
            f"${m.get('cost_usd', 0):.4f}{_agreement(m)}",
            ending=end,
        )
        self.stdout.flush()


def _agreement(metrics: dict) -> str:
    """A reward judge's agreement with the oracle, once its job has measured it."""
    rate = metrics.get("oracle_agreement")
    if rate is None:
        return ""
    text = f" · orders {100 * rate:.1f}% of {metrics['oracle_pairs']} pairs as the oracle does"
    heldout = metrics.get("oracle_agreement_heldout")
    if heldout is not None:
        text += f" ({100 * heldout:.1f}% of {metrics['oracle_pairs_heldout']} held out)"
    return text
