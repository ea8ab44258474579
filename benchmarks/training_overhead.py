"""The training runner against a bare TRL script, and precomputed against on-the-fly DPO
reference log-probs, on the same config and data, in one run.

1. Overhead: `python -m training.run cfg.json` (validation, metrics.jsonl, heartbeats,
   final save of adapter + processor + config) against a bare TRL script a person would
   write for the same job (load_dataset, from_pretrained, DPOTrainer(...).train(),
   save_model), both as subprocesses timed from outside, both with on-the-fly reference
   log-probs (the only kind TRL offers for vision data). Overhead = (runner - bare) /
   runner wall time; the target is <= 10%. Also the runner under the job supervisor
   (workers/core/supervisor.py: its own process group, metrics tailed and folded each second),
   i.e. a training job less its database writes.
2. Precomputed reference: the runner with `precompute_ref_logps` on (a cold cache) against
   off; the train time of the DPO epochs with and without the reference forward, and the
   saving excluding and including the one-off precompute.

Runs alternate and repeat; medians are reported. Prints one JSON line.

    .venv/bin/python benchmarks/training_overhead.py [--rows 384] [--epochs 2] [--repeats 3]

Without --model it builds the tiny LLaVA into a temporary folder (CPU figures, one torch
thread each, as a busy 2-core box runs fastest). On a GPU machine pass --device cuda and a
LLaVA checkpoint folder.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from datasets_app.core.curation.types import PreferenceRow  # noqa: E402
from datasets_app.core.export.parquet import ExportItem, write_dpo_parquet  # noqa: E402
from datasets_app.core.shapes import (  # noqa: E402
    COLOURS,
    LETTERS,
    draw_scene,
    png_bytes,
    random_scene,
)
from training.core import protocol  # noqa: E402
from training.core.protocol import Event  # noqa: E402

BARE_SCRIPT = """
import json, sys
args = json.loads(sys.argv[1])
import torch
if args["threads"]:
    torch.set_num_threads(args["threads"])
import datasets
from peft import LoraConfig
from transformers import AutoModelForImageTextToText, AutoProcessor
from trl import DPOConfig, DPOTrainer

dataset = datasets.load_dataset(
    "parquet", data_files=args["train"], cache_dir=args["cache"]
)["train"]
dtype = torch.bfloat16 if args["device"].startswith("cuda") else torch.float32
model = AutoModelForImageTextToText.from_pretrained(
    args["model"], dtype=dtype, device_map={"": args["device"]}
)
processor = AutoProcessor.from_pretrained(args["model"])
trainer = DPOTrainer(
    model=model,
    args=DPOConfig(
        output_dir=args["out"], learning_rate=args["lr"], num_train_epochs=args["epochs"],
        per_device_train_batch_size=args["batch"], beta=0.1, max_length=None,
        logging_steps=10, save_strategy="no", report_to=[], seed=42,
        bf16=dtype == torch.bfloat16, use_cpu=args["device"] == "cpu",
        activation_checkpointing=False, disable_tqdm=True,
    ),
    train_dataset=dataset,
    processing_class=processor,
    peft_config=LoraConfig(
        r=16, lora_alpha=32, lora_dropout=0.05, target_modules=args["targets"]
    ),
)
trainer.train()
trainer.save_model(args["out"])
"""


def write_data(path: Path, rows: int) -> Path:
    """Shapes colour questions as an exported DPO parquet (chosen right, rejected wrong)."""
    rng = random.Random(0)
    items, images = [], {}
    options = "\n".join(f"{LETTERS[j]}. {c}" for j, c in enumerate(COLOURS))
    for i in range(rows):
        scene = random_scene(rng, max_shapes=1)
        shape = scene.shapes[0]
        answer = list(COLOURS).index(shape.colour)
        wrong = rng.choice([j for j in range(4) if j != answer])
        images[str(i)] = png_bytes(draw_scene(scene))
        question = f"What colour is the {shape.kind}?\n{options}"
        row = PreferenceRow(
            i, question, f"The answer is {LETTERS[answer]}.", f"The answer is {LETTERS[wrong]}."
        )
        items.append(ExportItem(row, str(i)))
    write_dpo_parquet(path, items, images.__getitem__)
    return path


def timed(command: list[str]) -> float:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{command} failed:\n{result.stderr[-3000:]}")
    return seconds


def run_runner(work: Path, name: str, base: dict, precompute: bool) -> dict:
    out = work / name
    config = {**base, "output_dir": str(out), "precompute_ref_logps": precompute}
    cfg = work / f"{name}.json"
    cfg.write_text(json.dumps(config))
    wall = timed([sys.executable, "-m", protocol.RUNNER_MODULE, str(cfg)])
    records = protocol.read_events(out / protocol.METRICS_FILE)
    finished = records[-1]
    assert finished["event"] == Event.FINISHED, finished
    return {
        "wall": wall,
        "train": finished["train"]["train_runtime"],
        "precompute": sum(r["seconds"] for r in records if r["event"] == Event.REF_LOGPS),
        "steps": finished["step"],
    }


def run_supervised(work: Path, name: str, base: dict) -> float:
    """The runner as a training job runs it: under the supervisor (own process group,
    metrics tailed every second and folded into the job's progress), minus the database."""
    from training.core.runs import launch_command
    from workers.core.supervisor import supervise

    out = work / name
    config = {**base, "output_dir": str(out), "precompute_ref_logps": False}
    cfg = work / f"{name}.json"
    cfg.write_text(json.dumps(config))
    progress = protocol.TrainingProgress()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    outcome = supervise(
        launch_command(cfg),
        metrics_path=out / protocol.METRICS_FILE,
        log_path=out / protocol.RUNNER_LOG,
        on_events=lambda events: protocol.fold(events, progress),
        should_stop=lambda: False,
        env=env,
    )
    seconds = time.perf_counter() - start
    if outcome.returncode != protocol.EXIT_OK or not progress.final:
        log = (out / protocol.RUNNER_LOG).read_text()
        raise SystemExit(f"supervised run failed: {log[-3000:]}")
    return seconds


def run_bare(work: Path, name: str, base: dict, threads: int | None) -> float:
    from training.core.families import family_for, language_model_targets

    llava = family_for("llava")
    assert llava is not None
    args = {
        "train": base["train_file"],
        "model": base["model_path"],
        "out": str(work / name),
        "cache": str(work / name / ".datasets_cache"),
        "device": base["device"],
        "threads": threads,
        "lr": base["learning_rate"],
        "epochs": base["num_train_epochs"],
        "batch": base["per_device_train_batch_size"],
        "targets": language_model_targets(llava, llava.lora_targets),
    }
    return timed([sys.executable, "-c", BARE_SCRIPT, json.dumps(args)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="LLaVA checkpoint folder (default: build the tiny one)")
    parser.add_argument("--rows", type=int, default=384)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: default)")
    args = parser.parse_args()
    threads = args.threads or None

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = args.model
        if model is None:
            from training.core.tiny_models import build_tiny_llava

            model = str(build_tiny_llava(work / "tiny-llava"))
        base = {
            "recipe": "dpo",
            "model_path": model,
            "train_file": str(write_data(work / "train.parquet", args.rows)),
            "dataset_kind": "dpo",
            "learning_rate": 1e-3,
            "num_train_epochs": args.epochs,
            "per_device_train_batch_size": args.batch,
            "per_device_eval_batch_size": args.batch,
            "lora_r": 16,
            "lora_alpha": 32,
            "lora_dropout": 0.05,
            "logging_steps": 10,
            "save_steps": 0,
            "heartbeat_s": 30.0,
            "device": args.device,
            "torch_threads": threads,
        }
        runner, bare, precomputed, supervised = [], [], [], []
        for i in range(args.repeats):  # interleaved, so that load drifts hit them all alike
            bare.append(run_bare(work, f"bare-{i}", base, threads))
            runner.append(run_runner(work, f"runner-{i}", base, precompute=False))
            supervised.append(run_supervised(work, f"job-{i}", base))
            precomputed.append(run_runner(work, f"pre-{i}", base, precompute=True))

    runner_wall = statistics.median(r["wall"] for r in runner)
    supervised_wall = statistics.median(supervised)
    bare_wall = statistics.median(bare)
    on_the_fly = statistics.median(r["train"] for r in runner)
    pre_train = statistics.median(r["train"] for r in precomputed)
    pre_cost = statistics.median(r["precompute"] for r in precomputed)
    print(
        json.dumps(
            {
                "model": "tiny-llava" if args.model is None else args.model,
                "device": args.device,
                "threads": threads,
                "rows": args.rows,
                "epochs": args.epochs,
                "steps": runner[0]["steps"],
                "repeats": args.repeats,
                "bare_trl_wall_s": round(bare_wall, 2),
                "runner_wall_s": round(runner_wall, 2),
                "runner_overhead_fraction": round((runner_wall - bare_wall) / runner_wall, 4),
                "supervised_job_wall_s": round(supervised_wall, 2),
                "supervised_overhead_fraction": round(
                    (supervised_wall - bare_wall) / supervised_wall, 4
                ),
                "overhead_target": 0.10,
                "dpo_train_s_on_the_fly_ref": round(on_the_fly, 2),
                "dpo_train_s_precomputed_ref": round(pre_train, 2),
                "ref_precompute_s": round(pre_cost, 2),
                "saved_fraction_excluding_precompute": round(1 - pre_train / on_the_fly, 4),
                "saved_fraction_including_precompute": round(
                    1 - (pre_train + pre_cost) / on_the_fly, 4
                ),
            }
        )
    )


if __name__ == "__main__":
    main()
