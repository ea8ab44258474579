"""The runner protocol (training/core/protocol.py): what the runner and the recipes write is what
the supervisor and the training service read back, in the format runs already on disk have;
the runner needs nothing from workers/, and the protocol needs neither Django nor torch."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from training import run
from training.core import protocol, runs
from training.core.protocol import Event, TrainingProgress
from workers.core import supervisor

ROOT = Path(__file__).resolve().parent.parent


def _fresh(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_emitted_events_fold_into_progress(tmp_path):
    path = tmp_path / protocol.METRICS_FILE
    with path.open("a", encoding="utf-8") as stream:
        protocol.emit(stream, Event.STARTED, recipe="dpo", pid=7, resumed_from=None, config={})
        protocol.write(
            stream,
            protocol.record(Event.REF_LOGPS, timed=False, split="train", rows=4, cached=False,
                            seconds=1.5, path="ref.pt"),
        )  # fmt: skip
        protocol.emit(stream, Event.TRAIN_BEGIN, step=0, max_steps=20)
        for step in (1, 2):
            protocol.emit(stream, Event.METRICS, step=step, epoch=step / 20, loss=1.0 / step)
        protocol.emit(stream, Event.METRICS, step=2, epoch=0.1, eval_loss=0.25)
        protocol.emit(stream, Event.HEARTBEAT, step=3)
        protocol.emit(stream, Event.FINISHED, step=20, final_dir="out/final", train={}, eval={})

    events = protocol.read_events(path)
    assert [e["event"] for e in events] == [
        "started", "ref_logps", "train_begin", "metrics", "metrics", "metrics", "heartbeat",
        "finished",
    ]  # fmt: skip
    progress = protocol.fold(events)
    assert progress.step == 20 and progress.max_steps == 20
    assert [p["step"] for p in progress.history] == [1, 2]
    assert progress.history[1]["loss"] == 0.5
    assert progress.eval_latest == {"eval_loss": 0.25}
    assert progress.ref_logps == [{"split": "train", "rows": 4, "cached": False, "seconds": 1.5}]
    assert progress.final["final_dir"] == "out/final"
    # the fold survives the round trip through the Job row's JSON
    again = TrainingProgress.from_dict(json.loads(json.dumps(progress.to_dict())))
    assert again.history == progress.history and again.rate_origin == progress.rate_origin


def test_the_wire_format_is_unchanged(tmp_path):
    """Runs already on disk were written like this: the name first, then the time."""
    path = tmp_path / "m.jsonl"
    with path.open("a", encoding="utf-8") as stream:
        protocol.emit(stream, Event.TRAIN_BEGIN, step=4, max_steps=9)
        protocol.write(stream, protocol.record(Event.REF_LOGPS, timed=False, split="eval"))
    first, second = path.read_text().splitlines()
    assert first.startswith('{"event": "train_begin", "time": ')
    assert list(json.loads(first)) == ["event", "time", "step", "max_steps"]
    assert second == '{"event": "ref_logps", "split": "eval"}'
    assert [e.value for e in Event] == [
        "started", "ref_logps", "train_begin", "metrics", "heartbeat", "orphaned", "finished",
        "failed",
    ]  # fmt: skip
    names = (protocol.METRICS_FILE, protocol.RUNNER_LOG, protocol.JOB_CONFIG_FILE)
    assert names == ("metrics.jsonl", "runner.log", "job-config.json")
    assert protocol.CONFIG_FILE == "train_config.json"
    assert (protocol.EXIT_OK, protocol.EXIT_FAILED, protocol.EXIT_BAD_CONFIG) == (0, 1, 2)
    assert protocol.SUPERVISOR_PID_ENV == "STUDIO_SUPERVISOR_PID"


def test_a_torn_or_unfinished_line_is_not_an_event(tmp_path):
    path = tmp_path / "m.jsonl"
    assert protocol.read_events(path) == []
    path.write_text('{"event": "heartbeat", "step": 1}\n{"event": "hea\n[1, 2]\n{"event": "met')
    assert protocol.read_events(path) == [{"event": "heartbeat", "step": 1}]


def test_rank_files_and_log_lines():
    assert protocol.metrics_file_name({}) == "metrics.jsonl"
    assert protocol.metrics_file_name({"RANK": "0"}) == "metrics.jsonl"
    assert protocol.metrics_file_name({"RANK": "3"}) == "metrics.rank3.jsonl"
    started = protocol.record(Event.STARTED, pid=12, resumed_from="/runs/x/checkpoint-4")
    assert protocol.log_line(started) == "runner started (pid 12), resuming from checkpoint-4"
    ref = protocol.record(Event.REF_LOGPS, timed=False, split="eval", rows=3, cached=True)
    assert protocol.log_line(ref) == "reference log-probs (eval, 3 rows): read from the cache"
    assert protocol.log_line({"event": "failed", "error": "boom"}) == "runner failed: boom"
    assert protocol.log_line({"event": "orphaned"}) == "runner lost its supervisor and stopped"
    assert protocol.log_line(protocol.record(Event.METRICS, step=1, loss=0.1)) is None


def test_the_runners_writers_speak_the_protocol(tmp_path):
    """The runner's log (started, heartbeat, failed) and the recipes' callback (train_begin,
    metrics) write what the fold reads."""
    from training.core.recipes.common import MetricsCallback

    path = tmp_path / protocol.METRICS_FILE
    log = run.MetricsLog(path, heartbeat_s=60.0)
    log.event(Event.STARTED, recipe="sft", pid=1, resumed_from=None, config={})
    callback = MetricsCallback(log.write)
    state = SimpleNamespace(global_step=0, max_steps=8, epoch=0.0)
    callback.on_train_begin(None, state, None)
    state.global_step, state.epoch = 2, 0.25
    callback.on_log(None, state, None, logs={"loss": 0.5, "learning_rate": 1e-4})
    log.event(Event.FAILED, error="RuntimeError: boom", traceback="")
    log.close()

    events = protocol.read_events(path)
    assert [e["event"] for e in events] == ["started", "train_begin", "metrics", "failed"]
    assert list(events[2])[:4] == ["event", "time", "step", "epoch"]
    progress = protocol.fold(events)
    assert (progress.step, progress.max_steps) == (2, 8)
    assert progress.latest == {"loss": 0.5, "learning_rate": 1e-4}
    assert progress.error == "RuntimeError: boom"


def test_a_runner_without_arguments_exits_with_the_bad_config_code(capsys):
    assert run.main([]) == protocol.EXIT_BAD_CONFIG
    assert "usage" in capsys.readouterr().err


def test_the_runner_imports_nothing_from_workers():
    out = _fresh(
        "import training.run, sys; print([m for m in sys.modules if m.startswith('workers')])"
    )
    assert out == "[]"


@pytest.mark.parametrize(
    "module", ["training.core.protocol", "workers.core.supervisor", "training.core.runs"]
)
def test_the_protocol_and_its_readers_need_no_django_nor_torch(module):
    out = _fresh(
        f"import {module}, sys; "
        "heavy = ('django', 'torch', 'training.services.trainings'); "
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    assert out == "[]"


def test_one_repo_root():
    assert runs.REPO_ROOT is protocol.REPO_ROOT and supervisor.REPO_ROOT is protocol.REPO_ROOT
    assert (protocol.REPO_ROOT / "manage.py").is_file()
    defined = []
    tops = [p for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith(".")]
    sources = [ROOT / "manage.py"] + [
        path for top in tops if top.name not in {"tests", "benchmarks", "var"}
        for path in top.rglob("*.py")
    ]  # fmt: skip
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = node.targets if isinstance(node, ast.Assign) else []
            if any(isinstance(t, ast.Name) and t.id == "REPO_ROOT" for t in targets):
                defined.append(str(path.relative_to(ROOT)))
    assert defined == ["training/core/protocol.py"]


def test_a_stop_signal_ends_training_even_when_its_exception_is_caught():
    """The SIGTERM handler's exception may land in library code that catches Exception;
    the flag it sets still tells the Trainer to stop at the next step."""
    from types import SimpleNamespace

    from training.core.recipes.common import MetricsCallback

    stopped: list[str] = []
    callback = MetricsCallback(lambda line: None, stop_requested=lambda: bool(stopped))
    control = SimpleNamespace(should_training_stop=False)
    state = SimpleNamespace(global_step=3)
    callback.on_step_end(None, state, control)
    assert control.should_training_stop is False
    stopped.append("stopped by signal 15")
    callback.on_step_end(None, state, control)
    assert control.should_training_stop is True and callback.global_step == 3
