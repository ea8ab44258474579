from __future__ import annotations

from django.shortcuts import redirect, render

from config.access import staff_required
from datasets_app.selectors import prompt_selection_ids
from training.forms import GenerationForm
from training.services import generation


@staff_required
def generation_launch(request):
    form = GenerationForm(request.POST or None, initial=request.GET.dict())
    if request.method == "POST" and form.is_valid():
        try:
            job = generation.generation_launch(**form.launch_kwargs(), user=request.user)
        except ValueError as exc:
            form.add_error(None, str(exc))
        else:
            return redirect("workers:job", job_id=job.pk)
    return render(request, "training/generation_launch.html", {"form": form})


# The fields the count depends on: the estimate loads with the page, before a checkpoint is
# chosen, and must not greet the user with errors about fields it does not read.
ESTIMATE_FIELDS = ("source", "split", "subject", "prompt_ids", "limit", "k")


@staff_required
def generation_estimate(request):
    """How many completions the form would ask for (htmx, as the form changes)."""
    form = GenerationForm(request.GET)
    form.is_valid()
    errors = [
        f"{form[name].label}: {error}"
        for name in ESTIMATE_FIELDS
        for error in form.errors.get(name, [])
    ]
    context: dict = {"errors": errors, "n_prompts": None}
    if not errors:
        n_prompts, k = len(prompt_selection_ids(**form.selection())), form.cleaned_data["k"]
        context |= {"n_prompts": n_prompts, "k": k, "n_completions": n_prompts * k}
    return render(request, "training/_generation_estimate.html", context)
