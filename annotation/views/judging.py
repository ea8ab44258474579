"""The Judge page: staff rate completions with an AI judge."""

from __future__ import annotations

from django.shortcuts import get_object_or_404, redirect, render

from annotation import selectors
from annotation.forms import JudgeForm
from annotation.models import JudgeConfig
from annotation.services import judging
from config.access import staff_required


@staff_required
def judge_launch(request):
    # A generation job links here with ?checkpoint=&source= to judge what it made.
    form = JudgeForm(request.POST or None, initial=request.GET.dict())
    if request.method == "POST" and form.is_valid():
        try:
            config = judging.judge_config_from_spec(**form.judge_spec())
        except ValueError as exc:  # a judge that cannot be called: nothing was saved
            form.add_error("judge", str(exc))
            return render(request, "annotation/judge_launch.html", {"form": form})
        try:
            job = judging.judge_launch(
                judge_config=config, **form.launch_kwargs(), user=request.user
            )
        except ValueError as exc:
            form.add_error(None, str(exc))
        else:
            return redirect("workers:job", job_id=job.pk)
    return render(request, "annotation/judge_launch.html", {"form": form})


@staff_required
def judge_list(request):
    return render(request, "annotation/judge_list.html", {"judges": selectors.judge_rows()})


@staff_required
def judge_detail(request, judge_id: int):
    judge = get_object_or_404(JudgeConfig, pk=judge_id)
    return render(request, "annotation/judge_detail.html", selectors.judge_card(judge))
