"""Training runs as jobs launch them: the command (`python -m training.run`, or
`accelerate launch` around it for several GPUs, several machines or DeepSpeed ZeRO; the
services say how the machines find the job: training/services/machines.py). Pure: no Django. The
process itself is supervised by workers/core/supervisor.py; what it writes, and the fold of its
events into what the job page shows, is the runner protocol (training/core/protocol.py).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from training.core.protocol import REPO_ROOT, RUNNER_MODULE

ACCELERATE_CONFIGS = REPO_ROOT / "configs" / "accelerate"
# `zero` choices: the accelerate config file each one launches with.
ZERO_STAGES = {
    "zero2": "deepspeed_zero2.yaml",
    "zero3": "deepspeed_zero3.yaml",
    "zero3_offload": "deepspeed_zero3_offload.yaml",
}


@dataclass(frozen=True)
class Machines:
    """The machines one run spans and this one's place among them (the gpu worker's
    TRAIN_* settings). Every machine runs `accelerate launch` with the same count, address
    and port and its own rank; rank 0's address is where the others meet."""

    count: int = 1
    rank: int = 0
    main_address: str = ""
    main_port: int = 29500

    def check(self) -> None:
        """ValueError naming the setting that is wrong."""
        if self.count < 1:
            raise ValueError(f"TRAIN_NUM_MACHINES must be at least 1, not {self.count}")
        if not 0 <= self.rank < self.count:
            raise ValueError(
                f"TRAIN_MACHINE_RANK must be in [0, {self.count - 1}] for "
                f"{self.count} machine(s), not {self.rank}"
            )
        if self.count > 1 and not self.main_address.strip():
            raise ValueError(
                f"training on {self.count} machines needs TRAIN_MAIN_ADDRESS, the address of "
                "the machine of rank 0 that the others connect to"
            )
        if not 0 < self.main_port < 65536:
            raise ValueError(f"TRAIN_MAIN_PORT must be a TCP port, not {self.main_port}")


ONE_MACHINE = Machines()


def launch_command(
    config_path: str | os.PathLike[str],
    *,
    gpus: int = 1,
    zero: str | None = None,
    machines: Machines = ONE_MACHINE,
    python: str = sys.executable,
) -> list[str]:
    """The command that trains `config_path`: the runner itself for one device, or
    `accelerate launch` (multi-GPU data parallel, DeepSpeed ZeRO when asked) around it.

    `gpus` counts the GPUs of each machine; on several `machines` accelerate starts
    count x gpus processes in all, `gpus` of them here (it divides --num_processes by
    --num_machines), and every machine's command differs only in --machine_rank."""
    if gpus < 1:
        raise ValueError(f"gpus must be at least 1, not {gpus}")
    if zero is not None and zero not in ZERO_STAGES:
        raise ValueError(f"unknown zero stage {zero!r} (known: {', '.join(ZERO_STAGES)})")
    machines.check()
    if machines.count == 1 and gpus == 1 and zero is None:
        return [python, "-m", RUNNER_MODULE, str(config_path)]
    command = [python, "-m", "accelerate.commands.launch"]
    if machines.count > 1:
        command += [
            "--num_machines",
            str(machines.count),
            "--machine_rank",
            str(machines.rank),
            "--main_process_ip",
            machines.main_address.strip(),
            "--main_process_port",
            str(machines.main_port),
        ]
    command += ["--num_processes", str(machines.count * gpus)]
    if zero is not None:
        command += ["--config_file", str(ACCELERATE_CONFIGS / ZERO_STAGES[zero])]
    else:
        command += ["--multi_gpu"]
    return [*command, "--module", RUNNER_MODULE, str(config_path)]
