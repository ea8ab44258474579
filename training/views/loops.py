"""Staff pages for the records of `run_loop` runs: the list, and one run's results."""

from __future__ import annotations

import json

from django.shortcuts import get_object_or_404, render
from django.utils.safestring import SafeString, mark_safe

from common.charts import grouped_bars_svg, lines_svg
from config.access import staff_required
from training.core import loop_results
from training.models import LoopRun
from training.services.evaluations import compare_url


@staff_required
def loop_list(request):
    runs = LoopRun.objects.order_by("-created_at", "-pk")[:100]
    rows = [
        {
            "run": run,
            "dpo_delta": loop_results.headline_delta(run.result),
            "wall_s": loop_results.wall_seconds(run.result, run.stages),
        }
        for run in runs
    ]
    return render(request, "training/loop_list.html", {"rows": rows})


@staff_required
def loop_detail(request, loop_id: int):
    run = get_object_or_404(LoopRun, pk=loop_id)
    context = {
        "run": run,
        "headlines": loop_results.headline_sentences(run.result),
        "rows": loop_results.result_rows(run.result),
        "compare_url": _compare_url(run),
        "breakdown_charts": _breakdown_charts(run.breakdown),
        "logps_charts": _logps_charts(run.logps),
        "config": json.dumps(run.config, indent=2, sort_keys=True),
        "wall_s": loop_results.wall_seconds(run.result, run.stages),
    }
    return render(request, "training/loop_detail.html", context)


def _compare_url(run: LoopRun) -> str:
    """The comparison page of the run's checkpoints (in role order) on both tasks."""
    ids = [run.checkpoint_ids[r] for r in loop_results.ROLES if r in run.checkpoint_ids]
    if not ids:
        return ""
    return compare_url(ids, loop_results.TASKS)


def _breakdown_charts(breakdown: dict) -> list[SafeString]:
    """A chart per task: accuracy per question kind, a bar per role with its interval."""
    charts = []
    for task in loop_results.TASKS:
        groups, roles, values, intervals = loop_results.breakdown_series(breakdown, task)
        if roles:
            title = f"{task}: accuracy per question kind (95% CI)"
            # grouped_bars_svg escapes every label and number it writes.
            svg = grouped_bars_svg(groups, roles, values, intervals, title)
            charts.append(mark_safe(svg))  # noqa: S308
    return charts


def _logps_charts(logps: dict) -> list[SafeString]:
    return [
        # lines_svg escapes every label and number it writes.
        mark_safe(lines_svg(series, f"{label}: logps over training"))  # noqa: S308
        for label, series in loop_results.logps_series(logps)
    ]
