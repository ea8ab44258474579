"""Pages for dataset versions: build (with a preview), list, statistics, diff, download."""

from __future__ import annotations

from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from annotation.models import JudgeConfig
from common.charts import bars_svg, histogram_svg
from config.access import curator_required
from datasets_app import selectors
from datasets_app.forms import VersionForm
from datasets_app.models import DatasetVersion, Source
from datasets_app.services import exports, versions
from training.models import Checkpoint

PREVIEW_ROWS = 5


@curator_required
def version_list(request):
    return render(request, "datasets_app/version_list.html", {"versions": selectors.version_list()})


@curator_required
def version_new(request):
    form = VersionForm(request.POST or None)
    preview = None
    if request.method == "POST" and form.is_valid():
        recipe = form.recipe()
        try:
            if "save" in request.POST:
                version = versions.dataset_version_build(
                    name=form.cleaned_data["name"], user=request.user, **recipe
                )
                return redirect("datasets_app:version", version_id=version.pk)
            result, _ = versions.curation_preview(**recipe)
            preview = {"result": result, "rows": result.rows[:PREVIEW_ROWS]}
        except ValueError as exc:
            form.add_error(None, str(exc))
    return render(request, "datasets_app/version_new.html", {"form": form, "preview": preview})


@curator_required
def version_detail(request, version_id: int):
    version = get_object_or_404(DatasetVersion, pk=version_id)
    stats = version.stats
    charts = [
        histogram_svg(stats[key], title, colour)
        for key, title, colour in (
            ("margin_histogram", "Margin (chosen - rejected)", "#3056d3"),
            ("chosen_chars", "Chosen length (characters)", "#16794c"),
            ("rejected_chars", "Rejected length (characters)", "#b42318"),
            ("response_chars", "Response length (characters)", "#3056d3"),
        )
        if key in stats
    ]
    per_source = stats.get("per_source", {})
    names = dict(Source.objects.filter(pk__in=_ids(list(per_source))).values_list("pk", "name"))
    labels = [names.get(int(k), f"#{k}") if k.isdigit() else k for k in per_source]
    charts.append(bars_svg(labels, list(per_source.values()), "Rows per source"))
    context = {
        "version": version,
        "selection": _selection_rows(version.selection),
        "charts": charts,
        "sample": version.rows.select_related("prompt")[:10],
        "others": DatasetVersion.objects.filter(name=version.name).exclude(pk=version.pk),
        "files": exports.export_files(version),
    }
    return render(request, "datasets_app/version_detail.html", context)


def _ids(values: object) -> list[int]:
    items = values if isinstance(values, list) else [values]
    return [int(v) for v in items if str(v).isdigit()]


def _selection_rows(selection: dict) -> list[tuple[str, str]]:
    """The recorded prompt selection as (what, value) rows, with sources, checkpoints and
    judges by name rather than by database id."""
    lookups = {
        "source_id": ("source", Source),
        "source_ids": ("sources", Source),
        "checkpoint_ids": ("checkpoints", Checkpoint),
        "answer_judge_id": ("answer judge", JudgeConfig),
        "rewrite_judge_id": ("rewrite judge", JudgeConfig),
    }
    rows = []
    for key, value in selection.items():
        if value in (None, "", []):
            continue
        if key in lookups:
            label, model = lookups[key]
            ids = _ids(value)
            names = dict(model.objects.filter(pk__in=ids).values_list("pk", "name"))
            value = ", ".join(names.get(i, f"#{i} (deleted)") for i in ids)
            key = label
        rows.append((key.replace("_", " "), str(value)))
    return rows


@curator_required
def version_diff(request, version_id: int, other_id: int):
    old = get_object_or_404(DatasetVersion, pk=other_id)
    new = get_object_or_404(DatasetVersion, pk=version_id)
    diff = versions.dataset_versions_diff(old, new)
    return render(request, "datasets_app/version_diff.html", {"old": old, "new": new, "diff": diff})


@curator_required
@require_POST
def version_export(request, version_id: int):
    version = get_object_or_404(DatasetVersion, pk=version_id)
    job = exports.export_enqueue(version=version, user=request.user)
    return redirect("workers:job", job_id=job.pk)
