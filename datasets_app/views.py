from __future__ import annotations

from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, render

from config.access import curator_required
from datasets_app import selectors
from datasets_app.models import Prompt


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
    return render(request, "datasets_app/prompt_detail.html", {"prompt": prompt})
