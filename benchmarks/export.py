"""Streaming DPO export against the in-memory `datasets` baseline: rows/s and peak memory.

Each measurement runs in a fresh subprocess, so that its peak RSS (`ru_maxrss`) is its own
and not an earlier measurement's high-water mark. A measurement times only the export:
both sides get the same rows and the same image loader (a pool of distinct random-noise
PNGs of about 50 KB, cycled), and both produce the same columns.

- stream:   `write_dpo_parquet` (row groups of 256 rows, flat memory).
- baseline: build every row as a dict, `datasets.Dataset.from_list(rows, features=...)`,
            then `Dataset.to_parquet` (the whole dataset is in memory at once).

Peak RSS includes the interpreter and imports (`datasets` pulls in more than pyarrow);
`rss_before_mb` is each process's RSS just before the export, so `peak - before` is what
the export itself added. The baseline at --baseline-rows holds about rows x image size in
Arrow memory; it is skipped (and said so) if that does not fit in the memory available.

    .venv/bin/python benchmarks/export.py [--rows 100000] [--baseline-rows N] [--small 10000]

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

POOL = 64
SIDE = 128  # 128 x 128 RGB noise: a PNG of about 49.5 KB (noise does not compress)


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _image_pool() -> dict[str, bytes]:
    from PIL import Image

    rng = random.Random(0)
    pool = {}
    for i in range(POOL):
        buffer = io.BytesIO()
        Image.frombytes("RGB", (SIDE, SIDE), rng.randbytes(SIDE * SIDE * 3)).save(buffer, "PNG")
        pool[f"images/{i:02d}.png"] = buffer.getvalue()
    return pool


def _items(n: int) -> Iterator:
    from datasets_app.core.curation.types import PreferenceRow
    from datasets_app.core.export import ExportItem

    names = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
    for i in range(n):
        row = PreferenceRow(
            prompt_id=i,
            question=f"How many shapes are in the image, and which one is on the left? ({i})",
            chosen="There are three shapes: a red circle on the left, a blue square in the "
            "middle and a green triangle on the right. The circle is on the left.",
            rejected="There are two shapes, a circle and a square; the square is on the left.",
            chosen_id=2 * i,
            rejected_id=2 * i + 1,
            chosen_scores={name: (i + k) % 5 for k, name in enumerate(names)},
            rejected_scores={name: (i + k + 2) % 5 for k, name in enumerate(names)},
            margin=2.0,
            rater="judge:1",
        )
        yield ExportItem(row, f"images/{i % POOL:02d}.png")


def _measure(which: str, n: int, out: Path) -> dict:
    """Runs in the child process."""
    pool = _image_pool()
    load_image = pool.__getitem__
    if which == "stream":
        from datasets_app.core.export import write_dpo_parquet

        before = _rss_mb()
        start = time.perf_counter()
        write_dpo_parquet(out, _items(n), load_image)
        seconds = time.perf_counter() - start
    else:
        import datasets

        from datasets_app.core.export import DPO_FEATURES

        datasets.disable_progress_bars()
        features = datasets.Features.from_dict(DPO_FEATURES)
        before = _rss_mb()
        start = time.perf_counter()
        rows = []
        for item in _items(n):
            row = item.row
            part = {"type": "text", "text": None}
            rows.append(
                {
                    "images": [{"bytes": load_image(item.image_key), "path": None}],
                    "prompt": [
                        {
                            "role": "user",
                            "content": [
                                {"type": "image", "text": None},
                                {**part, "text": row.question},
                            ],
                        }
                    ],
                    "chosen": [{"role": "assistant", "content": [{**part, "text": row.chosen}]}],
                    "rejected": [
                        {"role": "assistant", "content": [{**part, "text": row.rejected}]}
                    ],
                    "prompt_id": row.prompt_id,
                    "chosen_scores": {k: float(v) for k, v in row.chosen_scores.items()},
                    "rejected_scores": {k: float(v) for k, v in row.rejected_scores.items()},
                    "margin": row.margin,
                    "rater": row.rater,
                }
            )
        dataset = datasets.Dataset.from_list(rows, features=features)
        dataset.to_parquet(str(out))
        seconds = time.perf_counter() - start
    return {
        "impl": which,
        "rows": n,
        "seconds": round(seconds, 2),
        "rows_per_s": round(n / seconds, 1),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "rss_before_mb": round(before, 1),
        "file_mb": round(out.stat().st_size / 2**20, 1),
    }


def _run_once(which: str, n: int, folder: Path) -> dict:
    out = folder / f"{which}-{n}.parquet"
    try:
        proc = subprocess.run(
            [sys.executable, __file__, "--child", which, "--n", str(n), "--out", str(out)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            tail = proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
            return {"impl": which, "rows": n, "error": tail[0]}
        return json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        out.unlink(missing_ok=True)


def _run_child(which: str, n: int, folder: Path, repeat: int) -> dict:
    """The run with the median time; peak RSS is the highest of all runs (the honest side
    for a memory claim)."""
    runs = [_run_once(which, n, folder) for _ in range(repeat)]
    good = sorted((r for r in runs if "error" not in r), key=lambda r: r["seconds"])
    if not good:
        return runs[0]
    median = dict(good[len(good) // 2])
    median["peak_rss_mb"] = max(r["peak_rss_mb"] for r in good)
    median["runs_seconds"] = [r["seconds"] for r in good]
    return median


def _available_mb() -> float:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return float("inf")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--baseline-rows", type=int, default=None)
    parser.add_argument("--small", type=int, default=10_000, help="second size, for flatness")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (median)")
    parser.add_argument("--child", choices=["stream", "baseline"], help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_measure(args.child, args.n, args.out)))
        return

    baseline_rows = args.baseline_rows or args.rows
    image_kb = sum(map(len, _image_pool().values())) / POOL / 1024
    small = min(args.small, args.rows, baseline_rows)
    sizes = sorted({small, args.rows})
    baseline_sizes = sorted({small, baseline_rows})
    skipped = []
    results = []
    folder = Path(tempfile.mkdtemp(prefix="bench-export-"))
    try:
        # The baseline first: if its large size does not fit, a middle size is measured
        # instead, and the streaming writer at that size too, so both compare at one size.
        grow_mb_per_row = None
        for n in baseline_sizes:
            if grow_mb_per_row is not None:
                # Its memory grows linearly in rows: extrapolate from the smaller size
                # (plus 15 %) rather than swap or be killed. Half of what is available, as
                # other processes share this machine.
                budget_mb = 0.5 * _available_mb()
                need_mb = grow_mb_per_row * n * 1.15
                if need_mb > budget_mb:
                    fits = int(budget_mb / (grow_mb_per_row * 1.15)) // small * small
                    skipped.append(
                        {
                            "rows": n,
                            "reason": f"would need ~{need_mb / 1024:.1f} GB, budget "
                            f"{budget_mb / 1024:.1f} GB (half of the available memory)",
                            "measured_instead": fits if fits > small else None,
                        }
                    )
                    if fits <= small:
                        continue
                    n = fits
                    sizes = sorted({*sizes, n})
            result = _run_child("baseline", n, folder, args.repeat)
            results.append(result)
            if "error" not in result:
                grow_mb_per_row = (result["peak_rss_mb"] - result["rss_before_mb"]) / n
        for n in sizes:
            results.append(_run_child("stream", n, folder, args.repeat))
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    def find(impl: str, n: int) -> dict | None:
        for r in results:
            if r["impl"] == impl and r["rows"] == n and "error" not in r:
                return r
        return None

    summary: dict = {
        "benchmark": "export",
        "image_kb_mean": round(image_kb, 1),
        "distinct_images": POOL,
        "repeat": args.repeat,
        "stream_sizes": sizes,
        "baseline_sizes_measured": [r["rows"] for r in results if r["impl"] == "baseline"],
        "baseline_skipped": skipped,
        "measurements": results,
    }
    # Compare at the largest size both sides measured.
    common = [n for n in sizes if find("stream", n) and find("baseline", n)]
    if common:
        n = max(common)
        stream, base = find("stream", n), find("baseline", n)
        assert stream is not None and base is not None
        speedup = stream["rows_per_s"] / base["rows_per_s"]
        memory = stream["peak_rss_mb"] / base["peak_rss_mb"]
        summary.update(
            compared_at_rows=n,
            speedup_rows_per_s=round(speedup, 2),
            peak_rss_ratio=round(memory, 3),
            added_rss_ratio=round(
                (stream["peak_rss_mb"] - stream["rss_before_mb"])
                / max(base["peak_rss_mb"] - base["rss_before_mb"], 1e-9),
                3,
            ),
            meets_2x_speed=speedup >= 2,
            meets_quarter_memory=memory <= 0.25,
        )
    first, last = find("stream", sizes[0]), find("stream", sizes[-1])
    if first and last and len(sizes) > 1:
        growth = last["peak_rss_mb"] / first["peak_rss_mb"]
        summary.update(
            stream_peak_growth=round(growth, 3),
            flat_memory=growth <= 1.10,  # within 10 % from the small size to the large one
        )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
