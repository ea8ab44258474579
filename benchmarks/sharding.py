"""One sharded generation job on 1 worker and on 2 workers, on a real Redis broker, in one run.

Each round starts N Celery worker processes on the gpu queue, sends a generation job whose
prompts are split into chunks, and times it from the send to the job's success (the
workers are started, and warm, before the clock starts: model loading is not in the time).
Prints one JSON line: seconds per round and the 2-worker speed-up over 1 worker.

    .venv/bin/python benchmarks/sharding.py [--prompts 48] [--k 4] [--chunk 4] [--threads 1]

`--threads` is torch's threads per worker. On a 2-core machine, 1 thread per worker is the
fair test of sharding (2 workers may use both cores, 1 worker one); with 2 threads the one
worker already uses both cores and the ratio measures only what sharding adds beyond them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_redis(folder: Path) -> tuple[subprocess.Popen, str]:
    binary = shutil.which("redis-server")
    if not binary:
        raise SystemExit("redis-server is not installed: run scripts/system-deps")
    port = _free_port()
    server = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--dir", folder],
        stdout=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    return server, f"redis://127.0.0.1:{port}/0"


def _workers(n: int, env: dict[str, str], folder: Path) -> list[subprocess.Popen]:
    procs = []
    for i in range(n):
        log = (folder / f"worker{i}.log").open("w")
        procs.append(
            subprocess.Popen(
                [
                    *(sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", "gpu"),
                    *("-c", "1", "-P", "solo", "-n", f"bench{i}@%h", "-l", "info"),
                    *("--without-gossip", "--without-mingle", "--without-heartbeat"),
                ],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        logs = [(folder / f"worker{i}.log").read_text() for i in range(n)]
        if all(" ready." in text for text in logs):
            return procs
        time.sleep(0.2)
    raise SystemExit("workers did not start")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=48)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--chunk", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="bench-shard-"))
    redis, redis_url = _start_redis(folder)
    env = {
        **os.environ,
        "VAR_DIR": str(folder / "var"),
        "DATABASE_URL": f"sqlite:///{folder / 'db.sqlite3'}",
        "REDIS_URL": redis_url,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": str(args.threads),
        "MKL_NUM_THREADS": str(args.threads),
    }
    os.environ.update({k: env[k] for k in ("VAR_DIR", "DATABASE_URL", "REDIS_URL")})
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.core.management import call_command

    from config.celery import app
    from datasets_app.core.shapes import make_shapes
    from datasets_app.services.imports import prompts_import
    from training.core.generation import SamplingParams
    from training.core.tiny_models import build_tiny_llava
    from training.models import Checkpoint
    from training.services import generation
    from workers.models import Job

    call_command("migrate", verbosity=0)
    make_shapes(folder / "shapes", n=args.prompts, seed=1)
    source = prompts_import(
        path=folder / "shapes" / "scienceqa.parquet", source_name="bench", fmt="scienceqa"
    ).source
    tiny = build_tiny_llava(folder / "tiny", seed=0)
    checkpoint = Checkpoint.objects.create(name="tiny", model_path=str(tiny))

    rounds = {}
    try:
        for n_workers in (1, 2):
            procs = _workers(n_workers, env, folder)
            try:
                # Each round samples anew: a different seed, so nothing is already complete.
                params = SamplingParams(
                    k=args.k, temperature=0.9, max_new_tokens=args.max_new_tokens, seed=n_workers
                )
                job = generation.generation_launch(
                    checkpoint=checkpoint,
                    selection={"source_id": source.pk},
                    params=params,
                    chunk_size=args.chunk,
                    enqueue=False,
                )
                started = time.perf_counter()
                app.send_task(JOB_TASK, args=[job.pk], queue="gpu")
                while True:
                    job.refresh_from_db()
                    if job.is_finished:
                        break
                    time.sleep(0.1)
                seconds = time.perf_counter() - started
                if job.status != Job.Status.SUCCEEDED:
                    raise SystemExit(f"job {job.pk} {job.status}: {job.error}")
                rounds[n_workers] = {
                    "seconds": round(seconds, 2),
                    "completions": job.metrics["completions"],
                    "chunk_workers": len(job.metrics["chunk_workers"]),
                }
            finally:
                for proc in procs:
                    proc.send_signal(signal.SIGTERM)
                for proc in procs:
                    proc.wait(60)
    finally:
        redis.terminate()
        shutil.rmtree(folder, ignore_errors=True)
    print(
        json.dumps(
            {
                "benchmark": "sharding",
                "prompts": args.prompts,
                "k": args.k,
                "chunk": args.chunk,
                "torch_threads_per_worker": args.threads,
                "cpus": os.cpu_count(),
                "one_worker": rounds[1],
                "two_workers": rounds[2],
                "speedup": round(rounds[1]["seconds"] / rounds[2]["seconds"], 2),
            }
        )
    )


JOB_TASK = "workers.tasks.generation.run_generation"

if __name__ == "__main__":
    main()
