"""Peak Python memory of validating a parquet of large images: bytes kept in the records
(baseline) against bytes spilled to a staging sink (what the import service does).

Prints one JSON line. Images are random noise so that PNG cannot compress them.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from datasets_app.core.imports import ImageLimits, parse_source


def _write_parquet(path: Path, n: int, side: int) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    rows = []
    for i in range(n):
        buffer = io.BytesIO()
        Image.effect_noise((side, side), 80 + i % 7).convert("RGB").save(buffer, "PNG")
        rows.append({"image": {"bytes": buffer.getvalue(), "path": None}, "question": f"Q{i}"})
    pq.write_table(pa.Table.from_pylist(rows), path)
    return sum(len(r["image"]["bytes"]) for r in rows)


def _peak(fn) -> int:
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=600)
    parser.add_argument("--side", type=int, default=192)
    args = parser.parse_args()
    limits = ImageLimits()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.parquet"
        total_bytes = _write_parquet(path, args.n, args.side)
        staging = Path(tmp) / "staging"
        staging.mkdir()

        def sink(image) -> None:
            (staging / image.sha256).write_bytes(image.data)

        kept = _peak(lambda: parse_source(path, "prompts", limits))
        spilled = _peak(lambda: parse_source(path, "prompts", limits, image_sink=sink))
    print(
        json.dumps(
            {
                "benchmark": "import_memory",
                "rows": args.n,
                "image_bytes_total": total_bytes,
                "peak_bytes_kept_in_records": kept,
                "peak_bytes_with_staging_sink": spilled,
                "ratio_sink_vs_kept": round(spilled / kept, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
