"""Staff pages for training: launch, the live job page, checkpoints with their lineage."""

from __future__ import annotations

from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import urlencode

from config.access import staff_required
from training import selectors
from training.forms import TrainingLaunchForm
from training.models import EvaluationRun, TrainingJob
from training.services import trainings


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
        try:
            training = trainings.training_launch(**form.launch_kwargs(), user=request.user)
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
    checkpoint = trainings.training_checkpoint(training)
    return {
        "training": training,
        "job": job,
        "progress": (job.metrics.get("training") or {}) if job else {},
        "charts": selectors.training_charts(job.metrics) if job else [],
        "checkpoint": checkpoint,
        "evaluate_url": _evaluate_url(training, checkpoint) if checkpoint else "",
        "tracking": selectors.training_tracking(training),
    }


def _evaluate_url(training: TrainingJob, checkpoint) -> str:
    """The evaluation form for the new checkpoint, filled in like the base checkpoint's
    latest evaluation (task, file, prompt), so that the two runs compare."""
    query = {"checkpoint": checkpoint.pk}
    last = (
        EvaluationRun.objects.filter(checkpoint=training.base_checkpoint)
        .order_by("-created_at")
        .first()
    )
    if last is not None:
        query |= {"task": last.task, "data": last.data_path, "prompt": last.prompt}
    return f"{reverse('training:evaluations')}?{urlencode(query)}"


@staff_required
def training_detail(request, training_id: int):
    return render(request, "training/training_detail.html", _detail_context(training_id))


@staff_required
def training_live(request, training_id: int):
    """The live part of the page (progress, ETA, curves, log), polled by htmx."""
    return render(request, "training/_training_live.html", _detail_context(training_id))
