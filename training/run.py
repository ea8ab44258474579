"""The training runner: `python -m training.run CONFIG.json`.

Reads a TrainConfig from JSON, validates it before anything heavy is imported, trains with
the recipe it names, and reports through OUTPUT_DIR/metrics.jsonl, one JSON object a line:
the events, files and exit codes of training/core/protocol.py. Heartbeats come from a thread
(a TrainerCallback only runs between steps), so that loading, reference log-probs, long
steps and evaluations show the job is alive too.

The job supervisor runs this as a subprocess (Celery's prefork workers cannot start
DataLoader workers; the config's default is 0 of them anyway) and may stop it with SIGTERM,
which is reported as a failure. With STUDIO_SUPERVISOR_PID set, the run also stops itself
(an "orphaned" event, then "failed") when that process dies.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from training.core import protocol
from training.core.protocol import EXIT_BAD_CONFIG, EXIT_FAILED, EXIT_OK, Event
from training.core.recipes.config import ConfigError, TrainConfig, last_checkpoint


class Terminated(Exception):
    """SIGTERM arrived: the supervisor stopped the job."""


# Set by the SIGTERM handler. The exception it raises may land inside library code that
# catches Exception and carries on; the flag still stops training (MetricsCallback) and
# turns the end of the run into a failure.
_stopped_by: list[str] = []


class MetricsLog:
    """Appends JSON lines to OUTPUT_DIR/metrics.jsonl (flushed each line, so a reader sees
    progress at once) and writes heartbeats from a daemon thread."""

    def __init__(self, path: Path, heartbeat_s: float) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", encoding="utf-8")
        self._lock = threading.Lock()
        self._heartbeat_s = heartbeat_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.step = lambda: 0  # replaced by the metrics callback's step once it exists

    def write(self, record: dict[str, Any]) -> None:
        with self._lock:
            protocol.write(self._file, record)

    def event(self, event: Event, **fields: Any) -> None:
        with self._lock:
            protocol.emit(self._file, event, **fields)

    def start_heartbeat(self, *, supervisor_pid: int | None = None) -> None:
        """Heartbeats every heartbeat_s; with supervisor_pid, also stop this run (SIGTERM to
        itself) within a second of the supervisor dying: the run has its own process group,
        so nothing else would stop it holding the GPU for a job already marked failed."""
        tick = min(self._heartbeat_s, 1.0)

        def beat() -> None:
            last = time.monotonic()
            while not self._stop.wait(tick):
                if supervisor_pid is not None and os.getppid() != supervisor_pid:
                    self.event(Event.ORPHANED, supervisor_pid=supervisor_pid)
                    os.kill(os.getpid(), signal.SIGTERM)
                    return
                if time.monotonic() - last >= self._heartbeat_s:
                    last = time.monotonic()
                    self.event(Event.HEARTBEAT, step=self.step())

        self._thread = threading.Thread(target=beat, name="heartbeat", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._file.close()


def load_config(path: str) -> TrainConfig:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from exc
    return TrainConfig.from_dict(data)


def check_output_dir(config: TrainConfig) -> None:
    """A fresh run needs a folder no earlier run trained in (their checkpoints and metrics
    would mix); a resumed run must train the same thing as the run that wrote it."""
    saved = Path(config.output_dir) / protocol.CONFIG_FILE
    if not saved.is_file():
        return
    if not config.resume:
        raise ConfigError(
            f"{config.output_dir} holds an earlier run: set resume=true to continue it, "
            "or choose a new output_dir"
        )
    before = TrainConfig.from_dict(json.loads(saved.read_text())).training_identity()
    now = config.training_identity()
    changed = sorted(k for k in now if before.get(k) != now[k])
    if changed:
        raise ConfigError(f"resume with a different config: {', '.join(changed)} changed")


def train(config: TrainConfig, log: MetricsLog) -> int:
    """Run the recipe; the caller has validated the config and opened the log."""
    resumed_from = last_checkpoint(config.output_dir) if config.resume else None
    check_output_dir(config)
    Path(config.output_dir, protocol.CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2))
    log.event(
        Event.STARTED,
        recipe=config.recipe,
        pid=os.getpid(),
        resumed_from=str(resumed_from) if resumed_from else None,
        config=config.to_dict(),
    )
    supervisor = os.environ.get(protocol.SUPERVISOR_PID_ENV)
    log.start_heartbeat(supervisor_pid=int(supervisor) if supervisor else None)
    from training.core.recipes import common  # transformers: seconds of imports, after "started"

    callback = common.MetricsCallback(log.write, stop_requested=lambda: bool(_stopped_by))
    log.step = lambda: callback.global_step
    if config.recipe == "dpo":
        from training.core.recipes import dpo

        result = dpo.main(config, callbacks=[callback], report=log.write)
    elif config.recipe == "mdpo":
        from training.core.recipes import mdpo

        result = mdpo.main(config, callbacks=[callback], report=log.write)
    elif config.recipe == "grpo":
        from training.core.recipes import grpo

        result = grpo.main(config, callbacks=[callback], report=log.write)
    elif config.recipe == "online_dpo":
        from training.core.recipes import online_dpo

        result = online_dpo.main(config, callbacks=[callback], report=log.write)
    elif config.recipe == "reward":
        from training.core.recipes import reward

        result = reward.main(config, callbacks=[callback], report=log.write)
    elif config.recipe == "kto":
        from training.core.recipes import kto

        result = kto.main(config, callbacks=[callback], report=log.write)
    else:  # "sft" and "steerlm" (validate() allows nothing else)
        from training.core.recipes import sft

        result = sft.main(config, callbacks=[callback], report=log.write)
    if _stopped_by:
        raise Terminated(_stopped_by[0])
    log.event(
        Event.FINISHED,
        step=result.global_step,
        final_dir=str(result.final_dir),
        train=result.train_metrics,
        eval=result.eval_metrics,
    )
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m training.run CONFIG.json", file=sys.stderr)
        return EXIT_BAD_CONFIG
    # As config/settings.py: a hub name must fail at once without network, not retry.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    try:
        config = load_config(argv[0]).resolved()
    except ConfigError as exc:  # no output_dir to report to: stderr only
        _report_failure(None, exc, argv[0])
        return EXIT_BAD_CONFIG
    try:
        log = MetricsLog(Path(config.output_dir) / protocol.metrics_file_name(), config.heartbeat_s)
    except OSError as exc:
        _report_failure(None, exc, argv[0])
        return EXIT_BAD_CONFIG
    try:
        config.validate()
    except ConfigError as exc:
        _report_failure(log, exc, argv[0])
        log.close()
        return EXIT_BAD_CONFIG

    previous = signal.getsignal(signal.SIGTERM)
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread:
        signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return train(config, log)
    except (Exception, KeyboardInterrupt) as exc:  # every failure: a `failed` event, exit != 0
        _report_failure(log, exc, argv[0])
        return EXIT_BAD_CONFIG if isinstance(exc, ConfigError) else EXIT_FAILED
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
        log.close()


def _raise_terminated(signum: int, frame: Any) -> None:
    _stopped_by.append(f"stopped by signal {signum}")
    raise Terminated(_stopped_by[0])


def _report_failure(log: MetricsLog | None, exc: BaseException, config_path: str) -> None:
    error = f"{type(exc).__name__}: {exc}"
    print(f"training failed ({config_path}): {error}", file=sys.stderr)
    if log is not None:
        log.event(Event.FAILED, error=error, traceback=traceback.format_exc(limit=20))


if __name__ == "__main__":
    sys.exit(main())
