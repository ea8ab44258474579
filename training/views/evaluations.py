"""Staff pages for evaluations: launch and list, one run's items, the comparison."""

from __future__ import annotations

import os

from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.safestring import SafeString, mark_safe

from common.charts import bars_svg
from config.access import staff_required
from training.core.evaluation.metrics import (
    PUBLISHED,
    SCORER_COLUMNS,
    flatten_metrics,
    metric_value,
    scorer_rows,
)
from training.forms import CompareForm, EvaluationForm
from training.models import EvaluationRun
from training.services import evaluations
from workers.models import Job

ITEMS_PER_PAGE = 50


@staff_required
def evaluation_list(request):
    form = EvaluationForm(request.POST or None, initial=request.GET.dict())
    if request.method == "POST" and form.is_valid():
        try:
            run = evaluations.evaluation_launch(
                checkpoint=form.cleaned_data["checkpoint"], user=request.user, **form.spec()
            )
        except ValueError as exc:
            form.add_error(None, str(exc))
        else:
            return redirect("training:evaluation", run_id=run.pk)
    runs = EvaluationRun.objects.select_related("checkpoint", "job").order_by("-created_at")[:100]
    return render(request, "training/evaluation_list.html", {"form": form, "runs": runs})


@staff_required
def evaluation_detail(request, run_id: int):
    return render(request, "training/evaluation_detail.html", _detail_context(request, run_id))


@staff_required
def evaluation_live(request, run_id: int):
    """The live part of the page (status, progress, metrics, items), polled by htmx until
    the job ends, so that the page shows the results without a reload."""
    return render(request, "training/_evaluation_live.html", _detail_context(request, run_id))


def _detail_context(request, run_id: int) -> dict:
    run = get_object_or_404(
        EvaluationRun.objects.select_related("checkpoint__parent", "job"), pk=run_id
    )
    items = run.items.all()
    wrong = request.GET.get("wrong") == "1"
    subject = request.GET.get("subject", "")
    context = request.GET.get("context", "")
    if wrong:
        items = items.filter(score__lt=1)
    if subject:
        items = items.filter(subject=subject)
    if context:
        items = items.filter(context=context)
    page = Paginator(items, ITEMS_PER_PAGE).get_page(request.GET.get("page"))
    subjects = _distinct(run, "subject")
    contexts = _distinct(run, "context")
    return {
        "run": run,
        "page": page,
        "filters": {"wrong": wrong, "subject": subject, "context": context},
        "subjects": subjects,
        "contexts": contexts,
        "metric_rows": flatten_metrics(run.metrics),
        "scorer_rows": scorer_rows(run.task, run.metrics),
        "scorer_columns": SCORER_COLUMNS,
        "compare_url": _compare_with_base_url(run),
    }


def _compare_with_base_url(run: EvaluationRun) -> str:
    """The comparison of this run's checkpoint with the one it was trained from, on this
    task; empty for a base checkpoint or a run that has not finished well."""
    base = run.checkpoint.parent
    if base is None or (run.job is not None and run.job.status != Job.Status.SUCCEEDED):
        return ""
    return evaluations.compare_url([base.pk, run.checkpoint.pk], [run.task], baseline_id=base.pk)


@staff_required
def compare(request):
    form = CompareForm(request.GET or None)
    tables, charts = [], []
    if form.is_valid():
        # Oldest first: base, then what was trained from it, as the lineage goes.
        checkpoints = sorted(form.cleaned_data["checkpoints"], key=lambda c: (c.created_at, c.pk))
        tables = evaluations.evaluation_compare(
            checkpoints=checkpoints,
            tasks=form.cleaned_data["tasks"],
            baseline=form.cleaned_data["baseline"],
        )
        _add_published(tables)
        charts = _charts(tables)
    return render(
        request, "training/compare.html", {"form": form, "tables": tables, "charts": charts}
    )


def _add_published(tables: list[dict]) -> None:
    """Beside each headline, the published scorers' numbers (lmms-eval, LLaVA) of the task,
    so that a row compares with a published table."""
    for table in tables:
        columns = PUBLISHED.get(table["task"], ())
        table["published"] = [label for _, label in columns]
        table["colspan"] = len(table["metric_names"]) + len(columns) + 3
        for row in table["rows"]:
            if row["run"] is not None:
                row["published"] = [metric_value(row["run"].metrics, p) for p, _ in columns]


def _distinct(run: EvaluationRun, field: str) -> list[str]:
    """The values of `field` among the run's items, for a filter menu (one query)."""
    values = run.items.exclude(**{field: ""}).order_by(field).values_list(field, flat=True)
    return list(values.distinct())


def short_labels(names: list[str]) -> list[str]:
    """Names without the prefix they share up to a '-' ("loop-1-base" -> "base"), so that
    chart labels fit under their bars."""
    if len(names) < 2:
        return names
    prefix = os.path.commonprefix(names)  # noqa: RUF071 - text, not paths
    cut = prefix.rfind("-") + 1
    return [name[cut:] or name for name in names]


def _charts(tables: list[dict]) -> list[SafeString]:
    """A bar chart per task and headline metric, one bar per checkpoint (none where a
    checkpoint has no finished run, so a missing run never reads as a score of 0)."""
    charts = []
    for table in tables:
        labels = short_labels([row["checkpoint"].name for row in table["rows"]])
        for index, metric in enumerate(table["metric_names"]):
            values = [row["values"][index] if "values" in row else None for row in table["rows"]]
            title = f"{table['task']}: {metric}"
            # bars_svg escapes every label and number it writes.
            charts.append(mark_safe(bars_svg(labels, values, title)))  # noqa: S308
    return charts
