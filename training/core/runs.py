"""Training runs as jobs launch them: the command (`python -m training.run`, or
`accelerate launch` around it for several GPUs or DeepSpeed ZeRO). Pure: no Django. The
process itself is supervised by workers/core/supervisor.py; what it writes, and the fold of its
events into what the job page shows, is the runner protocol (training/core/protocol.py).
"""

from __future__ import annotations

import os
import sys

from training.core.protocol import REPO_ROOT, RUNNER_MODULE

ACCELERATE_CONFIGS = REPO_ROOT / "configs" / "accelerate"
# `zero` choices: the accelerate config file each one launches with.
ZERO_STAGES = {
    "zero2": "deepspeed_zero2.yaml",
    "zero3": "deepspeed_zero3.yaml",
    "zero3_offload": "deepspeed_zero3_offload.yaml",
}


def launch_command(
    config_path: str | os.PathLike[str],
    *,
    gpus: int = 1,
    zero: str | None = None,
    python: str = sys.executable,
) -> list[str]:
    """The command that trains `config_path`: the runner itself for one device, or
    `accelerate launch` (multi-GPU data parallel, DeepSpeed ZeRO when asked) around it."""
    if gpus < 1:
        raise ValueError(f"gpus must be at least 1, not {gpus}")
    if zero is not None and zero not in ZERO_STAGES:
        raise ValueError(f"unknown zero stage {zero!r} (known: {', '.join(ZERO_STAGES)})")
    if gpus == 1 and zero is None:
        return [python, "-m", RUNNER_MODULE, str(config_path)]
    command = [python, "-m", "accelerate.commands.launch", "--num_processes", str(gpus)]
    if zero is not None:
        command += ["--config_file", str(ACCELERATE_CONFIGS / ZERO_STAGES[zero])]
    elif gpus > 1:
        command += ["--multi_gpu"]
    return [*command, "--module", RUNNER_MODULE, str(config_path)]
