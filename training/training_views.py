"""Staff pages for training: launch, the live job page, checkpoints with their lineage."""

from __future__ import annotations

from django.http import Http404
from django.shortcuts import redirect, render

from config.access import staff_required
from training import selectors, trainings
from training.forms import TrainingLaunchForm
from training.models import TrainingJob


@staff_required
def training_list(request):
    context = {
        "trainings": selectors.recent_training_jobs(),
        "lineage": selectors.flat_lineage(),
    }
    return render(request, "training/training_list.html", context)


@staff_required
def training_new(request):
    form = TrainingLaunchForm(request.POST or None, initial=request.GET.dict())
    if request.method == "POST" and form.is_valid():
        d = form.cleaned_data
        try:
            training = trainings.training_launch(
                recipe=d["recipe"],
                dataset_version=d["dataset_version"],
                base_checkpoint=d["base_checkpoint"],
                preset=d["preset"] or None,
                overrides=d["overrides"],
                gpus=d["gpus"],
                zero=d["zero"] or None,
                name=d["name"],
                evaluations=d["evaluations"],
                user=request.user,
            )
        except ValueError as exc:
            form.add_error(None, str(exc))
        else:
            return redirect("training:training", training_id=training.pk)
    return render(request, "training/training_new.html", {"form": form})


def _detail_context(training_id: int) -> dict:
    try:
        training = selectors.training_job_detail(training_id)
    except TrainingJob.DoesNotExist:
        raise Http404("no such training job") from None
    job = training.job
    return {
        "training": training,
        "job": job,
        "progress": (job.metrics.get("training") or {}) if job else {},
        "charts": selectors.training_charts(job.metrics) if job else [],
        "checkpoint": trainings.training_checkpoint(training),
    }


@staff_required
def training_detail(request, training_id: int):
    return render(request, "training/training_detail.html", _detail_context(training_id))


@staff_required
def training_live(request, training_id: int):
    """The live part of the page (progress, ETA, curves, log), polled by htmx."""
    return render(request, "training/_training_live.html", _detail_context(training_id))
