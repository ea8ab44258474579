"""Prompts in (an import, as the import page takes it), completions in, stored files out."""

from __future__ import annotations

from django.db import transaction
from django.http import HttpResponse
from ninja import File, Form, Router
from ninja.files import UploadedFile
from ninja.pagination import PageNumberPagination, paginate

from annotation.services.outside import OutsideCompletion, PushRejected, completions_push
from api.auth import ANY_USER, CURATORS
from api.errors import bad_request, form_errors
from api.schemas import (
    CompletionOut,
    CompletionsIn,
    CompletionsOut,
    CuratedPromptOut,
    JobOut,
)
from config.downloads import stored_file_response
from datasets_app import selectors
from datasets_app.forms import ImportForm
from datasets_app.services import imports

router = Router(tags=["data"])

HOW_TO_SKIP = "send skip_bad=true to import only the valid rows"


@router.post("/prompts/import", response={202: JobOut}, auth=CURATORS, url_name="prompts_import")
def prompts_import(
    request,
    file: File[UploadedFile],
    source: Form[str],
    format: Form[str] = "prompts",
    skip_bad: Form[bool] = False,
):
    """Queue an import of a prompts file (parquet, JSONL, CSV, or a zip of images with a
    manifest), as the import page does; poll the job for its outcome."""
    data = {"source": source, "format": format, "skip_bad": skip_bad}
    form = ImportForm(data, {"file": file})
    if not form.is_valid():
        raise form_errors(form)
    try:
        with transaction.atomic():
            job = imports.prompts_import_enqueue(
                upload=form.cleaned_data["file"],
                source_name=form.cleaned_data["source"],
                fmt=form.cleaned_data["format"],
                skip_bad=form.cleaned_data["skip_bad"],
                how_to_skip=HOW_TO_SKIP,
                user=request.auth,
            )
    except ValueError as exc:
        raise bad_request([((), str(exc))]) from None
    return job


@router.get("/prompts", response=list[CuratedPromptOut], auth=CURATORS, url_name="prompts")
@paginate(PageNumberPagination, page_size=50, max_page_size=500)
def prompt_list(request, source: str = "", split: str = "", q: str = ""):
    """Prompts, as the prompts page lists them; `source` is a source's name."""
    found = selectors.prompt_list(source_id=None, split=split, query=q.strip())
    if source:
        found = found.filter(source__name=source)
    return found.prefetch_related("more_images")  # the selector joins the source


@router.post("/completions", response={201: CompletionsOut}, auth=CURATORS, url_name="completions")
def completions_create(request, body: CompletionsIn):
    """Store completions of any outside generator, all or none. A sample already there
    with the same text is returned as it is (created: false), so a retry is harmless."""
    rows = [OutsideCompletion(**c.model_dump()) for c in body.completions]
    try:
        pushed = completions_push(rows=rows, user=request.auth)
    except PushRejected as exc:
        raise bad_request(exc.errors, under=("body", "completions")) from None
    return {
        "completions": [
            CompletionOut(
                id=p.completion.pk,
                prompt_id=p.completion.prompt_id,
                checkpoint=p.completion.checkpoint.name,
                sample_index=p.completion.sample_index,
                created=p.created,
            )
            for p in pushed
        ]
    }


@router.get("/files/{path:path}", auth=ANY_USER, url_name="file")
def stored_file(request, path: str) -> HttpResponse:
    """A stored file (a prompt image, an export) under the same rules as the pages' links:
    streamed, or a redirect to a short-lived signed URL with object storage."""
    return stored_file_response(request.auth, path)
