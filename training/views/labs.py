"""Staff pages for labs: launch one, the list, one lab's table, chart, costs and methods."""

from __future__ import annotations

import json

from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.safestring import SafeString, mark_safe
from django.views.decorators.http import require_POST

from common.charts import deltas_svg, grouped_bars_svg
from config.access import staff_required
from training.core import lab_results, loop_results
from training.forms import LabForm
from training.models import Checkpoint, LabRun
from training.services import lab as labs
from training.services.evaluations import compare_url
from training.services.loop import LoopError


@staff_required
def lab_list(request):
    form = LabForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            lab = labs.lab_launch(config=form.config(), user=request.user)
        except LoopError as exc:
            form.add_error(None, str(exc))
        else:
            return redirect("training:lab", lab_id=lab.pk)
    labs_shown = LabRun.objects.select_related("job").order_by("-created_at", "-pk")[:100]
    return render(request, "training/lab_list.html", {"form": form, "labs": labs_shown})


def _context(lab_id: int) -> dict:
    lab = get_object_or_404(LabRun.objects.select_related("job"), pk=lab_id)
    result = lab.result or {}
    methods = lab.state.get("methods", {})
    ids = [lab.state.get("shared", {}).get("start_id")]
    ids += [methods[m].get("checkpoint_id") for m in lab_results.method_names(methods)]
    ids = [pk for pk in ids if pk]
    # One query for every method's checkpoint: the live part polls this every 3 s.
    trained = Checkpoint.objects.in_bulk(ids)
    return {
        "lab": lab,
        "job": lab.job,
        "methods": [
            {
                "name": m,
                "method": lab_results.METHODS[m],
                **methods[m],
                "links": _links(lab, m, trained),
            }
            for m in lab_results.method_names(methods)
        ],
        "rows": lab_results.table_rows(result) if result else [],
        "headlines": loop_results.headline_sentences(result, lab_results.ROLES, lab_results.LABELS),
        "charts": [c for task in loop_results.TASKS if (c := _chart(result, task))],
        "breakdown_charts": _breakdown_charts(lab.breakdown),
        "compare_url": compare_url(ids, loop_results.TASKS) if len(ids) > 1 else "",
        "config": json.dumps(lab.config, indent=2, sort_keys=True),
        "wall_s": loop_results.wall_seconds(result, lab.stages),
        "can_resume": not labs.lab_not_resumable(lab),
    }


@staff_required
def lab_detail(request, lab_id: int):
    return render(request, "training/lab_detail.html", _context(lab_id))


@staff_required
def lab_live(request, lab_id: int):
    """The methods' states and the job's progress, polled by htmx while the lab runs."""
    return render(request, "training/_lab_live.html", _context(lab_id))


@staff_required
@require_POST
def lab_resume(request, lab_id: int):
    lab = get_object_or_404(LabRun, pk=lab_id)
    try:
        labs.lab_resume(lab=lab, user=request.user)
    except ValueError as exc:
        messages.error(request, str(exc))
    else:
        messages.info(request, f"Lab {lab.tag} resumed: the methods not done run again.")
    return redirect("training:lab", lab_id=lab.pk)


def _links(lab: LabRun, method: str, checkpoints: dict[int, Checkpoint]) -> list[tuple[str, str]]:
    """Where a method's run lives: its training set, training run and evaluations."""
    state = lab.state.get("methods", {}).get(method, {})
    links = []
    if state.get("version_id"):
        links.append(("set", reverse("datasets_app:version", args=[state["version_id"]])))
    checkpoint = checkpoints.get(state.get("checkpoint_id") or 0)
    if checkpoint is not None and checkpoint.training_job_id:
        links.append(("training", reverse("training:training", args=[checkpoint.training_job_id])))
    for task, run_id in sorted(lab.state.get("evals", {}).get(method, {}).items()):
        links.append((task, reverse("training:evaluation", args=[run_id])))
    return links


def _chart(result: dict, task: str) -> SafeString | None:
    points = lab_results.delta_points(result, task) if result else []
    if not points:
        return None
    title = f"{task}: accuracy vs start, points (95% CI)"
    labels, values, intervals = zip(*points, strict=True)
    # deltas_svg escapes every label and number it writes.
    return mark_safe(deltas_svg(labels, values, intervals, title))  # noqa: S308


def _breakdown_charts(breakdown: dict) -> list[SafeString]:
    charts = []
    for task in loop_results.TASKS:
        groups, roles, values, intervals = loop_results.breakdown_series(
            breakdown, task, lab_results.ROLES, lab_results.LABELS
        )
        if roles:
            # grouped_bars_svg escapes every label and number it writes.
            svg = grouped_bars_svg(groups, roles, values, intervals, f"{task}: accuracy (95% CI)")
            charts.append(mark_safe(svg))  # noqa: S308
    return charts
