from __future__ import annotations

from django.contrib import messages
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import urlencode
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
    return render(request, "workers/job_detail.html", _progress_context(job))


def job_progress(request, job_id: int):
    """The live part of the job page, polled by htmx until the job ends."""
    job = selectors.access_job(request.user, job_id)
    return render(request, "workers/_job_progress.html", _progress_context(job))


def _progress_context(job: Job) -> dict:
    return {"job": job, "outputs": _outputs(job), "shards": selectors.job_shards(job)}


def _outputs(job: Job) -> list[tuple[str, str]]:
    """(label, URL) of what the job made and the step that reads it next. Only kinds whose
    pages the job's viewers may open: generation and evaluation are staff jobs, export a
    curator's."""
    if job.kind == Job.Kind.GENERATION and (job.progress_done or job.is_finished):
        return _generation_outputs(job)
    if job.status != Job.Status.SUCCEEDED:
        return []
    if job.kind == Job.Kind.EXPORT:
        return _export_outputs(job)
    evaluation = getattr(job, "evaluation", None) if job.kind == Job.Kind.EVALUATION else None
    if evaluation is not None:
        return [("Evaluation results", reverse("training:evaluation", args=[evaluation.pk]))]
    return []


def _generation_outputs(job: Job) -> list[tuple[str, str]]:
    prompt_ids = job.params.get("prompt_ids") or []
    source_id = (job.params.get("selection") or {}).get("source_id")
    links = []
    if prompt_ids:
        url = reverse("datasets_app:prompt", args=[prompt_ids[0]])
        links.append(("Completions of the first prompt", url))
    if source_id:
        links.append(
            ("All prompts of the source", f"{reverse('datasets_app:prompts')}?source={source_id}")
        )
    query = urlencode(
        {"checkpoint": job.params.get("checkpoint_id") or "", "source": source_id or ""}
    )
    links.append(("Judge these completions", f"{reverse('annotation:judge')}?{query}"))
    return links


def _export_outputs(job: Job) -> list[tuple[str, str]]:
    from datasets_app.models import DatasetVersion
    from datasets_app.services.exports import export_files

    version = DatasetVersion.objects.filter(pk=job.params.get("version_id")).first()
    if version is None:
        return []
    files = [(f"Download {name}", url) for name, url in export_files(version)]
    return [*files, (f"Dataset {version}", reverse("datasets_app:version", args=[version.pk]))]


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
