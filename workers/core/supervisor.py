"""Supervising a subprocess that reports through a JSON-lines file (pure: no Django).

A job task gives `supervise` a command, the file the process appends events to, and two
callbacks: one that stores new events, one that says whether a cancel was asked for. The
process gets its own process group, so that a cancel stops it and everything it started
(e.g. the ranks of `accelerate launch`), and the supervisor's pid in its environment, so
that it can stop itself when the supervisor dies (training/run.py does). The variable's
name and the line format are the runner protocol's (training/core/protocol.py).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.core.protocol import REPO_ROOT, SUPERVISOR_PID_ENV, decode_lines


class MetricsTail:
    """Reads the complete new lines of a JSON-lines file that another process appends to."""

    def __init__(self, path: Path, *, from_end: bool = False) -> None:
        self.path = path
        # A resumed job appends to the same file: what is there was read by the last attempt.
        self._offset = path.stat().st_size if from_end and path.exists() else 0

    def read(self) -> list[dict[str, Any]]:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n")
        if end < 0:
            return []  # a line still being written: read it whole next time
        self._offset += end + 1
        return decode_lines(data[: end + 1])


@dataclass
class Outcome:
    returncode: int
    stopped: bool  # stopped by us (cancel), not ended on its own


def supervise(
    command: Sequence[str],
    *,
    metrics_path: Path,
    log_path: Path,
    on_events: Callable[[list[dict[str, Any]]], None],
    should_stop: Callable[[], bool],
    on_poll: Callable[[], None] = lambda: None,
    cwd: Path = REPO_ROOT,
    env: dict[str, str] | None = None,
    poll_s: float = 1.0,
    grace_s: float = 30.0,
) -> Outcome:
    """Run `command` in its own process group until it ends or `should_stop()` is true.

    New metrics events go to `on_events` after each poll; stdout and stderr go to
    `log_path`. Whatever goes wrong in here (a database error in a callback), the process
    group is stopped before the exception leaves.
    """
    tail = MetricsTail(metrics_path, from_end=True)
    environment = {**(env if env is not None else os.environ), SUPERVISOR_PID_ENV: str(os.getpid())}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            list(command),
            cwd=cwd,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    stopped = False
    try:
        while process.poll() is None:
            time.sleep(poll_s)
            events = tail.read()
            if events:
                on_events(events)
            on_poll()
            if not stopped and should_stop():
                stopped = True
                stop_process_group(process, grace_s=grace_s)
        events = tail.read()
        if events:
            on_events(events)
    except BaseException:
        stop_process_group(process, grace_s=grace_s)
        raise
    return Outcome(returncode=process.returncode, stopped=stopped)


def stop_process_group(process: subprocess.Popen[bytes], *, grace_s: float) -> None:
    """SIGTERM to the whole group (the run saves nothing more and reports `failed`), then
    SIGKILL for whatever is still there after `grace_s`."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace_s)
    with contextlib.suppress(ProcessLookupError):  # also children that outlived the leader
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
