"""Jobs: poll one, cancel one, and launch generation, judging, training, evaluation and
labs with the launch pages' forms, so that the API refuses what the pages refuse."""

from __future__ import annotations

from django.db import transaction
from ninja import Router

from annotation.forms import JudgeForm
from annotation.services import judging
from api.auth import ANY_USER, STAFF
from api.errors import bad_request
from api.formbody import form_from_body, form_schema
from api.schemas import JobOut
from training.forms import EvaluationForm, GenerationForm, LabForm, TrainingLaunchForm
from training.services import evaluations, generation, trainings
from training.services import lab as labs
from training.services.loop import LoopError
from workers.jobs import job_request_cancel
from workers.selectors import access_job

router = Router(tags=["jobs"])

GenerationIn = form_schema(GenerationForm, "GenerationIn")
JudgingIn = form_schema(JudgeForm, "JudgingIn")
TrainingIn = form_schema(TrainingLaunchForm, "TrainingIn")
EvaluationIn = form_schema(EvaluationForm, "EvaluationIn")
LabIn = form_schema(LabForm, "LabIn")


@router.get("/jobs/{int:job_id}", response=JobOut, auth=ANY_USER, url_name="job")
def job_detail(request, job_id: int):
    """Status, progress (done of total) and error: staff see every job, others the jobs
    they started (the job page's rule)."""
    return access_job(request.auth, job_id)


@router.post(
    "/jobs/{int:job_id}/cancel", response={202: JobOut}, auth=ANY_USER, url_name="job_cancel"
)
def job_cancel(request, job_id: int):
    job = access_job(request.auth, job_id)
    job_request_cancel(job=job)
    job.refresh_from_db()
    return job


def _launched(launch):
    """Run a launch in one transaction: a refusal leaves nothing (no judge configuration,
    no job), and the task is sent only once the job is committed."""
    try:
        with transaction.atomic():
            return launch()
    except (ValueError, LoopError) as exc:
        raise bad_request([((), str(exc))]) from None


@router.post("/jobs/generation", response={202: JobOut}, auth=STAFF, url_name="launch_generation")
def launch_generation(request, body: GenerationIn):  # type: ignore[valid-type]
    """K samples per prompt from a checkpoint: the Generate page's fields."""
    form = form_from_body(GenerationForm, body)
    return _launched(
        lambda: generation.generation_launch(**form.launch_kwargs(), user=request.auth)
    )


@router.post("/jobs/judging", response={202: JobOut}, auth=STAFF, url_name="launch_judging")
def launch_judging(request, body: JudgingIn):  # type: ignore[valid-type]
    """An AI judge rates completions: the Judge page's fields."""
    form = form_from_body(JudgeForm, body)

    def launch():
        try:
            config = judging.judge_config_from_spec(**form.judge_spec())
        except ValueError as exc:  # a judge that cannot be called: on its field, as the page
            raise bad_request([(("judge",), str(exc))]) from None
        return judging.judge_launch(judge_config=config, **form.launch_kwargs(), user=request.auth)

    return _launched(launch)


@router.post("/jobs/training", response={202: JobOut}, auth=STAFF, url_name="launch_training")
def launch_training(request, body: TrainingIn):  # type: ignore[valid-type]
    """A fine-tune of a checkpoint on a dataset version: the Train page's fields."""
    form = form_from_body(TrainingLaunchForm, body)
    return _launched(
        lambda: trainings.training_launch(**form.launch_kwargs(), user=request.auth).job
    )


@router.post("/jobs/evaluation", response={202: JobOut}, auth=STAFF, url_name="launch_evaluation")
def launch_evaluation(request, body: EvaluationIn):  # type: ignore[valid-type]
    """A checkpoint on a benchmark file: the Evaluate page's fields."""
    form = form_from_body(EvaluationForm, body)
    return _launched(
        lambda: (
            evaluations.evaluation_launch(
                checkpoint=form.cleaned_data["checkpoint"], user=request.auth, **form.spec()
            ).job
        )
    )


@router.post("/jobs/lab", response={202: JobOut}, auth=STAFF, url_name="launch_lab")
def launch_lab(request, body: LabIn):  # type: ignore[valid-type]
    """The lab: alignment methods side by side from one start, on the shapes world (the Labs
    page's fields); poll its job, then read the lab's page for the table."""
    form = form_from_body(LabForm, body)
    return _launched(lambda: labs.lab_launch(config=form.config(), user=request.auth).job)
