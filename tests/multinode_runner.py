"""A stand-in for `python -m training.run` under a multi-machine `accelerate launch`: every
process joins one gloo group and sums its rank over it (what a real run's first collective
does), writes what it saw, and global rank 0 reports `finished` as the runner protocol says.
The test swaps it in for the runner module, so the launch, the rendezvous of two "machines"
on 127.0.0.1 and the job flow around them are real, without a GPU or a model."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from training.core import protocol


def main(config_path: str) -> int:
    import torch
    import torch.distributed as dist

    out = Path(json.loads(Path(config_path).read_text())["output_dir"])
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    total = torch.tensor([float(rank)])
    dist.all_reduce(total)
    seen = {
        "rank": rank,
        "world": world,
        "rank_sum": total.item(),
        "machine": int(os.environ["GROUP_RANK"]),
        "local_rank": int(os.environ["LOCAL_RANK"]),
    }
    (out / f"probe.rank{rank}.json").write_text(json.dumps(seen))
    dist.barrier()
    dist.destroy_process_group()
    if rank == 0:
        (out / protocol.FINAL_DIR).mkdir(exist_ok=True)
        with (out / protocol.METRICS_FILE).open("a") as metrics:
            protocol.write(metrics, protocol.record(protocol.Event.STARTED, recipe="probe"))
            protocol.write(metrics, protocol.record(protocol.Event.FINISHED, step=0))
    return protocol.EXIT_OK


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
