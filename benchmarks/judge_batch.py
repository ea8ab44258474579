"""Online against batch judging, and what an audit adds (issue 18.5).

The same 1,000 prompts x 4 completions are rated twice by the OpenAI judge (the real SDK)
against the fake server on 127.0.0.1: online, under a server-enforced limit of 20
requests/s with 200 ms latency, then (ratings and cache cleared) as one Batch, polled every
second, which the fake finishes after a few polls. Reported: each mode's wall time and
cost, the cost ratio (batch / online; the target is 0.5) and the calls each made. Then an
audit of 100 of the prompts (--position --repeats 3) counts its extra calls over plain
judging. Prints one JSON line; runs on a throw-away SQLite database.

    .venv/bin/python benchmarks/judge_batch.py [--prompts 1000] [--rate 20]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.judge_throughput import _judge, _make_data, _setup_django  # noqa: E402


def _clear() -> None:
    from annotation.models import JudgeCall, Rating

    Rating.objects.all().delete()
    JudgeCall.objects.all().delete()


def _audit(source_id: int, prompts: int, rate: float) -> dict:
    from annotation.core.judges.runner import RunLimits
    from annotation.services import audits, judging

    config = judging.judge_config_from_spec("openai:gpt-4o-mini")
    row = audits.judge_audit(
        judge_config=config,
        selection={"source_id": source_id, "limit": prompts},
        position=True,
        repeats=3,
        limits=RunLimits(concurrency=16, requests_per_minute=rate * 60),
    )
    return row.result


def main() -> None:
    from tests.fake_batch_servers import FakeOpenAIBatchServer

    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=1000)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--rate", type=float, default=20.0, help="requests/s the server allows")
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--audit-prompts", type=int, default=100)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as var_dir,
        FakeOpenAIBatchServer(
            latency_s=args.latency,
            rate_limit_per_s=args.rate,
            validating_polls=1,
            progress_polls=2,
        ) as server,
    ):
        _setup_django(var_dir, server.base_url)
        source_id = _make_data(args.prompts, args.k)
        online_s, online = _judge(source_id, args.rate)
        online_calls = server.calls
        _clear()
        batch_s, batch = _judge(source_id, args.rate, batch=True, poll_s=1.0)
        batch_calls = server.calls - online_calls
        _clear()
        audit = _audit(source_id, args.audit_prompts, args.rate)
    print(
        json.dumps(
            {
                "benchmark": "judge_batch",
                "prompts": args.prompts,
                "completions_per_prompt": args.k,
                "server_limit_per_s": args.rate,
                "server_latency_s": args.latency,
                "online_seconds": round(online_s, 2),
                "online_cost_usd": online["cost_usd"],
                "online_http_calls": online_calls,
                "batch_seconds": round(batch_s, 2),
                "batch_cost_usd": batch["cost_usd"],
                "batch_http_calls": batch_calls,
                "cost_ratio": round(batch["cost_usd"] / online["cost_usd"], 4),
                "wall_ratio": round(batch_s / online_s, 4),
                "audit_prompts": audit["items"],
                "audit_calls": audit["calls"],
                "audit_cost_usd": audit["cost_usd"],
                # Over plain judging's one call an item (the plain order is judging's call).
                "audit_extra_calls_per_item": round(audit["calls"] / audit["items"] - 1, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
