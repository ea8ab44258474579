import json

from django.core.management.base import BaseCommand, CommandError

from annotation.core.judges.base import ATTRIBUTES
from annotation.core.judges.runner import RunLimits
from annotation.services import audits, judging
from config.commands import add_source_argument, source_selection


class Command(BaseCommand):
    help = (
        "Audit a judge: rate a sample again in reverse order (--position) and N times over "
        "(--repeats N); report position bias, self-consistency and parse failures."
    )

    def add_arguments(self, parser):
        parser.add_argument("--judge", required=True, help="oracle | gemini:MODEL | ...")
        add_source_argument(parser)
        parser.add_argument("--split", default="")
        parser.add_argument("--limit", type=int, default=50, help="at most this many prompts")
        parser.add_argument("--position", action="store_true", help="rate in reverse order too")
        parser.add_argument("--repeats", type=int, default=1, help="rate each item N times")
        parser.add_argument("--k-per-call", type=int, default=4)
        parser.add_argument("--temperature", type=float, default=0.0)
        parser.add_argument("--prompt-version", default="v2")
        parser.add_argument("--base-url", default="")
        parser.add_argument("--concurrency", type=int, default=8)
        parser.add_argument("--rpm", type=float, help="requests per minute")
        parser.add_argument(
            "--max-cost", type=float, help="refuse if the estimate passes this (USD)"
        )
        parser.add_argument(
            "--debias",
            action="store_true",
            help="store as the judge's rating the mean over the orders tried (with --position)",
        )
        parser.add_argument("--json", action="store_true", help="end with one JSON line")

    def handle(self, *args, **o):
        try:
            config = judging.judge_config_from_spec(
                o["judge"],
                prompt_version=o["prompt_version"],
                temperature=o["temperature"],
                base_url=o["base_url"],
            )
            row = audits.judge_audit(
                judge_config=config,
                selection={
                    **source_selection(o["source"]),
                    "split": o["split"],
                    "limit": o["limit"],
                },
                position=o["position"],
                repeats=o["repeats"],
                k_per_call=o["k_per_call"],
                max_cost=o["max_cost"],
                limits=RunLimits(concurrency=o["concurrency"], requests_per_minute=o["rpm"]),
                debias=o["debias"],
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        r = row.result
        self.stdout.write(
            f"audit #{row.pk} of {config.name}: {r['items']} items, {r['calls']} calls "
            f"({r['cached_calls']} cached), ${r['cost_usd']:.4f}"
        )
        if r["position_flip_rate"] is not None:
            deltas = ", ".join(
                f"{a} {r['mean_abs_delta'][a]:.2f}"
                for a in ATTRIBUTES
                if r["mean_abs_delta"][a] is not None
            )
            self.stdout.write(
                f"position: best or worst pick flips on {100 * r['position_flip_rate']:.1f}% "
                f"of {r['position_items']} items; mean |score change|: {deltas}"
            )
        if r["repeat_items"]:
            alphas = ", ".join(
                f"{a} {'n/a' if v is None else f'{v:.2f}'}" for a, v in r["self_alpha"].items()
            )
            self.stdout.write(f"self-consistency (Krippendorff's alpha): {alphas}")
        self.stdout.write(f"parse failures: {100 * (r['parse_failure_rate'] or 0):.1f}% of calls")
        if "debiased" in r:
            self.stdout.write(f"debiased: {r['debiased']} ratings are now the mean over orders")
        if o["json"]:
            self.stdout.write(json.dumps(audits.audit_json(row)))
