"""Dataset versions: list and filter, one version with its export's files, export, download."""

from __future__ import annotations

from django.db import transaction
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404
from ninja import Router
from ninja.pagination import PageNumberPagination, paginate

from api.auth import CURATORS
from api.errors import bad_request
from api.formbody import form_from_body, form_schema
from api.schemas import JobOut, VersionDetailOut, VersionOut
from config.downloads import stored_file_response
from datasets_app import selectors
from datasets_app.forms import VersionForm
from datasets_app.models import DatasetVersion
from datasets_app.services import exports, versions

router = Router(tags=["dataset versions"])


@router.get("/versions", response=list[VersionOut], auth=CURATORS, url_name="versions")
@paginate(PageNumberPagination, page_size=50, max_page_size=500)
def version_list(request, name: str = "", kind: str = "", status: str = "", strategy: str = ""):
    """Dataset versions as the Datasets page lists them (by name, newest version first),
    filtered by exact name, kind, status or strategy."""
    filters = {"name": name, "kind": kind, "status": status, "strategy": strategy}
    return selectors.version_list().filter(**{k: v for k, v in filters.items() if v})


VersionIn = form_schema(VersionForm, "VersionIn")


@router.post("/versions", response={201: VersionOut}, auth=CURATORS, url_name="version_new")
def version_new(request, body: VersionIn):  # type: ignore[valid-type]
    """Build a version from ratings by a named strategy: the Build a version page's fields
    (`params` and `filters` are JSON text, as in its boxes)."""
    form = form_from_body(VersionForm, body)
    try:
        return versions.dataset_version_build(
            name=form.cleaned_data["name"], user=request.auth, **form.recipe()
        )
    except ValueError as exc:
        raise bad_request([((), str(exc))]) from None


@router.get(
    "/versions/{int:version_id}", response=VersionDetailOut, auth=CURATORS, url_name="version"
)
def version_detail(request, version_id: int):
    """One version, with the files of its last export."""
    return get_object_or_404(DatasetVersion.objects.select_related("created_by"), pk=version_id)


@router.post(
    "/versions/{int:version_id}/export",
    response={202: JobOut},
    auth=CURATORS,
    url_name="version_export",
)
def version_export(request, version_id: int):
    """Queue an export (parquet files and the dataset card), as the version page's button."""
    version = get_object_or_404(DatasetVersion, pk=version_id)
    with transaction.atomic():
        job = exports.export_enqueue(version=version, user=request.auth)
    return job


@router.get("/versions/{int:version_id}/files/{name}", auth=CURATORS, url_name="version_file")
def version_file(request, version_id: int, name: str) -> HttpResponse:
    """One file of the version's last export (e.g. train.parquet): the same check and
    response as the download links of the version page."""
    version = get_object_or_404(DatasetVersion, pk=version_id)
    if not version.export_path:
        raise Http404("this version has not been exported: POST .../export first")
    return stored_file_response(request.auth, f"{version.export_path}/{name}")
