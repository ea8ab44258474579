from __future__ import annotations

from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect, render

from annotation.selectors import prompt_completions_by_checkpoint
from config.access import curator_required
from datasets_app import selectors
from datasets_app.forms import ImportForm
from datasets_app.models import Prompt
from datasets_app.services import imports


@curator_required
def prompt_list(request):
    source_id = request.GET.get("source", "")
    prompts = selectors.prompt_list(
        source_id=int(source_id) if source_id.isdigit() else None,
        split=request.GET.get("split", ""),
        query=request.GET.get("q", "").strip(),
    )
    page = Paginator(prompts, 48).get_page(request.GET.get("page"))
    context = {"page": page, "sources": selectors.source_list(), "filters": request.GET}
    return render(request, "datasets_app/prompt_list.html", context)


@curator_required
def prompt_detail(request, prompt_id: int):
    prompt = get_object_or_404(Prompt.objects.select_related("source"), pk=prompt_id)
    groups = prompt_completions_by_checkpoint(prompt_id=prompt.pk)
    context = {
        "prompt": prompt,
        "groups": groups,
        "conversation": selectors.prompt_conversation(prompt),
    }
    return render(request, "datasets_app/prompt_detail.html", context)


@curator_required
def import_prompts(request):
    form = ImportForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        try:
            job = imports.prompts_import_enqueue(
                upload=form.cleaned_data["file"],
                source_name=form.cleaned_data["source"],
                fmt=form.cleaned_data["format"],
                skip_bad=form.cleaned_data["skip_bad"],
                how_to_skip=form.how_to_skip(),
                user=request.user,
            )
        except ValueError as exc:
            form.add_error(None, str(exc))
        else:
            return redirect("workers:job", job_id=job.pk)
    return render(request, "datasets_app/import.html", {"form": form})
