from __future__ import annotations

from django.contrib import messages
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from config.access import staff_required
from workers import selectors, services
from workers.jobs import job_request_cancel
from workers.models import Job


@staff_required
def status(request):
    context = {"status": selectors.system_status(), "jobs": selectors.recent_jobs(limit=20)}
    return render(request, "workers/status.html", context)


@staff_required
@require_POST
def selftest(request):
    try:
        job = services.selftest_enqueue(queue=request.POST.get("queue", ""), user=request.user)
    except ValueError as exc:
        messages.error(request, str(exc))
        return redirect("workers:status")
    return redirect("workers:job", job_id=job.pk)


def job_detail(request, job_id: int):
    job = selectors.access_job(request.user, job_id)
    training = getattr(job, "training", None) if job.kind == Job.Kind.TRAINING else None
    if training is not None:  # its own page has the curves, ETA and checkpoint
        return redirect("training:training", training_id=training.pk)
    return render(request, "workers/job_detail.html", {"job": job})


def job_progress(request, job_id: int):
    """The live part of the job page, polled by htmx until the job ends."""
    job = selectors.access_job(request.user, job_id)
    return render(request, "workers/_job_progress.html", {"job": job})


@require_POST
def job_cancel(request, job_id: int):
    job = selectors.access_job(request.user, job_id)
    job_request_cancel(job=job)
    messages.info(request, f"Cancel requested for job #{job.pk}.")
    return redirect("workers:job", job_id=job.pk)


@require_POST
def job_resume(request, job_id: int):
    job = selectors.access_job(request.user, job_id)
    try:
        services.job_resume(job=job)
    except ValueError as exc:
        messages.error(request, str(exc))
    return redirect("workers:job", job_id=job.pk)
