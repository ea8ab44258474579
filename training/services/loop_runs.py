"""Writes for the record of a `run_loop` run: started, then finished with its results or
failed with its error.

Every part is checked (training/core/loop_results.py) before anything is written, and a run
ends once: finishing or failing is a conditional UPDATE on a running row, so that a second
call (a retry, a crashed command rerun by hand) is refused instead of overwriting the first.
"""

from __future__ import annotations

import json
from pathlib import PurePath
from typing import Any

from django.utils import timezone

from datasets_app.models import DatasetVersion
from training.core import loop_results
from training.models import Checkpoint, LoopRun


def _json(value: Any, where: str, *, paths_as_text: bool = False) -> Any:
    """`value` as JSON stores it (tuples become lists); refuse what JSON cannot hold.
    `paths_as_text`: the command's options hold folders (Path), kept as their text."""

    def default(obj: Any) -> str:
        if paths_as_text and isinstance(obj, PurePath):
            return str(obj)
        raise TypeError(f"{type(obj).__name__} is not JSON serializable")

    try:
        return json.loads(json.dumps(value, allow_nan=False, default=default))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where} is not JSON: {exc}") from exc


def loop_run_start(*, tag: str, config: dict[str, Any]) -> LoopRun:
    tag = tag.strip() if isinstance(tag, str) else ""
    if not tag:
        raise ValueError("a loop run needs a tag")
    if not isinstance(config, dict):
        raise ValueError("config must be an object")
    return LoopRun.objects.create(tag=tag, config=_json(config, "config", paths_as_text=True))


def _ids(ids: Any, model: type, where: str, *, nullable: bool) -> dict[str, int | None]:
    if not isinstance(ids, dict):
        raise ValueError(f"{where} must be an object of ids")
    for key, pk in ids.items():
        if pk is None and nullable:
            continue
        if not isinstance(pk, int) or isinstance(pk, bool):
            raise ValueError(f"{where}.{key} must be an id, not {pk!r}")
    wanted = {pk for pk in ids.values() if pk is not None}
    missing = wanted - set(model.objects.filter(pk__in=wanted).values_list("pk", flat=True))
    if missing:
        raise ValueError(f"{where}: no {model.__name__} with id {', '.join(map(str, missing))}")
    return dict(ids)


def _end(run: LoopRun, **fields: Any) -> LoopRun:
    fields["finished_at"] = timezone.now()
    changed = LoopRun.objects.filter(pk=run.pk, status=LoopRun.Status.RUNNING).update(**fields)
    if not changed:
        raise ValueError(f"loop run {run.tag!r} (#{run.pk}) has already ended")
    run.refresh_from_db()
    return run


def loop_run_finish(
    run: LoopRun,
    *,
    result: dict[str, Any],
    breakdown: dict[str, Any],
    stages: list,
    logps: dict[str, Any],
    checkpoint_ids: dict[str, int],
    versions: dict[str, int | None],
) -> LoopRun:
    """Record a run's results; nothing is written unless every part is well formed."""
    result = _json(result, "result")
    breakdown, stages = _json(breakdown, "breakdown"), _json(stages, "stages")
    logps = _json(logps, "logps")
    loop_results.check_result(result)
    loop_results.check_breakdown(breakdown)
    loop_results.check_stages(stages)
    loop_results.check_logps(logps)
    checkpoint_ids = _ids(checkpoint_ids, Checkpoint, "checkpoint_ids", nullable=False)
    unknown = sorted(set(checkpoint_ids) - set(loop_results.ROLES))
    if unknown:
        raise ValueError(f"checkpoint_ids: unknown role {', '.join(unknown)}")
    versions = _ids(versions, DatasetVersion, "versions", nullable=True)
    return _end(
        run,
        status=LoopRun.Status.SUCCEEDED,
        result=result,
        breakdown=breakdown,
        stages=stages,
        logps=logps,
        checkpoint_ids=checkpoint_ids,
        versions=versions,
    )


def loop_run_fail(run: LoopRun, *, error: str, stages: list) -> LoopRun:
    """Record why a run stopped, with the stages it had done."""
    if not isinstance(error, str) or not error.strip():
        raise ValueError("a failed loop run needs its error")
    stages = _json(stages, "stages")
    loop_results.check_stages(stages)
    return _end(run, status=LoopRun.Status.FAILED, error=error, stages=stages)
