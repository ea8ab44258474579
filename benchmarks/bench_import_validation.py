"""What full image validation costs on import, against merely reading the rows.

Baseline: pyarrow reads the ScienceQA-format parquet into Python rows.
Measured: `parse_source`, which also checks size, header pixels, Pillow verify, a full
decode and hashes every image. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from datasets_app.core.imports import ImageLimits, parse_source
from datasets_app.core.shapes import make_shapes


def _best_of(repeats: int, fn) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory() as tmp:
        make_shapes(tmp, n=args.n, seed=0)
        path = Path(tmp) / "scienceqa.parquet"
        baseline = _best_of(args.repeats, lambda: pq.read_table(path).to_pylist())
        limits = ImageLimits()
        result = parse_source(path, "scienceqa", limits)
        assert not result.errors and len(result.records) == args.n
        measured = _best_of(args.repeats, lambda: parse_source(path, "scienceqa", limits))
    print(
        json.dumps(
            {
                "benchmark": "import_validation",
                "rows": args.n,
                "baseline_read_s": round(baseline, 4),
                "validated_parse_s": round(measured, 4),
                "validated_rows_per_s": round(args.n / measured),
                "ratio_vs_read": round(measured / baseline, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
