"""Judging throughput under a server-enforced rate limit, through the whole job path.

1,000 prompts x 4 completions are rated by the OpenAI judge (the real SDK) against the fake
server on 127.0.0.1, which answers after 200 ms and refuses anything over 20 requests/s.
The limit allows the run no less than 1,000 / 20 = 50 s: the target is at most 10% more,
no request refused by the server, and a rerun that makes no call at all.
Prints one JSON line. Runs on a throw-away SQLite database.

    .venv/bin/python benchmarks/judge_throughput.py [--prompts 1000] [--rate 20]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _setup_django(var_dir: str, base_url: str) -> None:
    os.environ.update(
        VAR_DIR=var_dir,
        DATABASE_URL="",
        REDIS_URL="",
        OPENAI_API_KEY="sk-benchmark",
        OPENAI_BASE_URL=base_url,
        DJANGO_SETTINGS_MODULE="config.settings",
        LOG_LEVEL="WARNING",
    )
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def _make_data(n_prompts: int, k: int) -> int:
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage
    from PIL import Image

    from annotation.models import Completion
    from datasets_app.models import Prompt, Source
    from training.models import Checkpoint

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(buffer, "PNG")
    image = default_storage.save("images/bench.png", ContentFile(buffer.getvalue()))
    source = Source.objects.create(name="bench", kind="prompts")
    Prompt.objects.bulk_create(
        Prompt(source=source, image=image, question=f"Question {i}?", content_hash=f"{i:064d}")
        for i in range(n_prompts)
    )
    checkpoint = Checkpoint.objects.create(name="bench", model_path="x")
    Completion.objects.bulk_create(
        Completion(prompt=p, checkpoint=checkpoint, text=f"Answer {j} for {p.pk}.", sample_index=j)
        for p in Prompt.objects.all()
        for j in range(k)
    )
    return source.pk


def _judge(source_id: int, rate: float, **launch: object) -> tuple[float, dict]:
    """Rate the source's completions as one job under `rate` requests/s; its wall time and
    metrics. `launch` goes to judge_launch (batch mode, its poll interval)."""
    from annotation.core.judges.runner import RunLimits
    from annotation.services import judging

    config = judging.judge_config_from_spec("openai:gpt-4o-mini")
    job = judging.judge_launch(
        judge_config=config,
        selection={"source_id": source_id},
        limits=RunLimits(concurrency=16, requests_per_minute=rate * 60),
        timeout_s=30,
        enqueue=False,
        **launch,  # type: ignore[arg-type]
    )
    start = time.perf_counter()
    judging.judge_run(job_id=job.pk)
    seconds = time.perf_counter() - start
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    return seconds, job.metrics


def main() -> None:
    from tests.fake_judge_servers import FakeOpenAIServer

    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=1000)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--rate", type=float, default=20.0, help="requests/s the server allows")
    parser.add_argument("--latency", type=float, default=0.2)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as var_dir,
        FakeOpenAIServer(latency_s=args.latency, rate_limit_per_s=args.rate) as server,
    ):
        _setup_django(var_dir, server.base_url)
        source_id = _make_data(args.prompts, args.k)
        seconds, metrics = _judge(source_id, args.rate)
        first_calls, violations = server.calls, server.violations
        rerun_seconds, rerun_metrics = _judge(source_id, args.rate)
        rerun_calls = server.calls - first_calls
    floor = args.prompts / args.rate
    print(
        json.dumps(
            {
                "benchmark": "judge_throughput",
                "prompts": args.prompts,
                "completions_per_prompt": args.k,
                "server_latency_s": args.latency,
                "server_limit_per_s": args.rate,
                "floor_s": floor,
                "seconds": round(seconds, 2),
                "ratio_to_floor": round(seconds / floor, 3),
                "calls": first_calls,
                "server_refusals": violations,
                "failures": metrics["failures"],
                "rerun_seconds": round(rerun_seconds, 2),
                "rerun_calls": rerun_calls,
                "rerun_skipped": rerun_metrics["skipped"],
            }
        )
    )


if __name__ == "__main__":
    main()
