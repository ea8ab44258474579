"""Writes for sources and prompts: the only code here that joins the import core to the ORM."""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile, File
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from datasets_app.imports import ImageLimits, ParseResult, PromptRecord, ValidImage, parse_source
from datasets_app.imports.archives import ArchiveRejected, extract_zip
from datasets_app.models import Prompt, Source
from workers.jobs import JobFailed, job_create, job_enqueue, job_running
from workers.models import Job

INSERT_BATCH = 500


class ImportRejected(Exception):
    """The file had bad rows and --skip-bad was not given: nothing was written."""

    def __init__(self, parsed: ParseResult, report_name: str) -> None:
        self.parsed = parsed
        self.report_name = report_name
        first = "; ".join(str(e) for e in parsed.errors[:3])
        more = f" (and {len(parsed.errors) - 3} more)" if len(parsed.errors) > 3 else ""
        super().__init__(
            f"{len(parsed.errors)} of {parsed.rows_total} rows are invalid, so nothing was "
            f"imported: {first}{more}. Fix them, or import the valid rows with --skip-bad. "
            f"Full report: {report_name}"
        )


@dataclass
class ImportOutcome:
    source: Source
    rows_total: int
    created: int
    duplicates: int
    rejected: list[dict[str, Any]] = field(default_factory=list)
    report_name: str = ""


def import_limits() -> ImageLimits:
    return ImageLimits(
        max_bytes=settings.IMPORT_MAX_IMAGE_BYTES, max_pixels=settings.IMPORT_MAX_IMAGE_PIXELS
    )


def _save_report(source_name: str, parsed: ParseResult, path: Path) -> str:
    stamp = timezone.now().strftime("%Y%m%dT%H%M%S")
    body = {
        "source": source_name,
        "file": str(path),
        "file_sha256": parsed.file_sha256,
        "rows_total": parsed.rows_total,
        "rows_rejected": len(parsed.errors),
        "errors": parsed.report,
    }
    name = f"import-reports/{slugify(source_name) or 'source'}-{stamp}.json"
    return default_storage.save(name, ContentFile(json.dumps(body, indent=2).encode()))


class _ImageStaging:
    """Validated image bytes wait on local disk until the import is known to go ahead."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __call__(self, image: ValidImage) -> None:
        staged = self.folder / image.sha256
        if not staged.exists():
            staged.write_bytes(image.data)

    def store(self, image: ValidImage | None) -> str:
        if image is None:
            return ""
        name = image.storage_name
        if default_storage.exists(name):
            return name
        with (self.folder / image.sha256).open("rb") as handle:
            return default_storage.save(name, File(handle))


def prompts_import(
    *,
    path: str | Path,
    source_name: str,
    fmt: str,
    skip_bad: bool = False,
    user: Any = None,
) -> ImportOutcome:
    """Import a prompts file all-or-nothing (unless skip_bad); re-importing adds nothing."""
    path = Path(path)
    source_name = source_name.strip()
    if not source_name:
        raise ValueError("a source name is required")
    existing = Source.objects.filter(name=source_name).first()
    if existing is not None and existing.kind != fmt:
        raise ValueError(
            f"source {source_name!r} holds {existing.kind} prompts; import {fmt} under another name"
        )
    with tempfile.TemporaryDirectory(prefix="studio-import-") as tmp:
        staging = _ImageStaging(Path(tmp))
        parsed = parse_source(path, fmt, import_limits(), image_sink=staging)
        return _import_parsed(parsed, path, source_name, fmt, existing, staging, skip_bad, user)


def _import_parsed(
    parsed: ParseResult,
    path: Path,
    source_name: str,
    fmt: str,
    existing: Source | None,
    staging: _ImageStaging,
    skip_bad: bool,
    user: Any,
) -> ImportOutcome:
    report_name = _save_report(source_name, parsed, path) if parsed.errors else ""
    if parsed.errors and not skip_bad:
        raise ImportRejected(parsed, report_name)

    unique: dict[str, PromptRecord] = {}
    for record in parsed.records:
        unique.setdefault(record.content_hash, record)
    known = (
        set(
            Prompt.objects.filter(source=existing, content_hash__in=list(unique)).values_list(
                "content_hash", flat=True
            )
        )
        if existing
        else set()
    )
    new_records = [(h, r) for h, r in unique.items() if h not in known]
    # Files first (content-addressed, so a failed transaction leaves only harmless orphans).
    image_names = {h: staging.store(r.image) for h, r in new_records}

    with transaction.atomic():
        source, _ = Source.objects.get_or_create(
            name=source_name, defaults={"kind": fmt, "created_by": user}
        )
        Prompt.objects.bulk_create(
            [
                Prompt(
                    source=source,
                    image=image_names[h],
                    image_sha256=r.image.sha256 if r.image else "",
                    image_width=r.image.width if r.image else None,
                    image_height=r.image.height if r.image else None,
                    question=r.question,
                    reference_answer=r.reference_answer,
                    choices=r.choices,
                    answer_index=r.answer_index,
                    hint=r.hint,
                    subject=r.subject,
                    split=r.split,
                    metadata=r.metadata,
                    content_hash=h,
                )
                for h, r in new_records
            ],
            batch_size=INSERT_BATCH,
        )
        source.file_name = str(path)
        source.file_sha256 = parsed.file_sha256
        source.rows_total = parsed.rows_total
        source.rows_imported = len(new_records)
        source.rows_duplicate = len(parsed.records) - len(new_records)
        source.rows_rejected = len(parsed.errors)
        source.report = parsed.report
        source.save()
    return ImportOutcome(
        source=source,
        rows_total=parsed.rows_total,
        created=len(new_records),
        duplicates=len(parsed.records) - len(new_records),
        rejected=parsed.report,
        report_name=report_name,
    )


UPLOAD_SUFFIXES = (".parquet", ".jsonl", ".ndjson", ".csv", ".zip")


def prompts_import_enqueue(
    *, upload: Any, source_name: str, fmt: str, skip_bad: bool, user: Any = None
) -> Job:
    """Keep an uploaded file in storage and queue its import as a job."""
    from workers.tasks.imports import run_import

    file_name = Path(upload.name).name
    if not file_name.lower().endswith(UPLOAD_SUFFIXES):
        raise ValueError(f"{file_name}: upload one of {', '.join(UPLOAD_SUFFIXES)}")
    stored = default_storage.save(f"uploads/{uuid.uuid4().hex}/{file_name}", upload)
    job = job_create(
        kind=Job.Kind.IMPORT,
        title=f"import {file_name} into {source_name}",
        params={"upload": stored, "source": source_name, "format": fmt, "skip_bad": skip_bad},
        created_by=user,
    )
    job_enqueue(job, run_import)
    return job


def prompts_import_job_run(*, job_id: int) -> None:
    """The body of an import job: fetch the upload, unpack a zip, import, record counts."""
    with job_running(job_id) as run, tempfile.TemporaryDirectory(prefix="studio-up-") as tmp:
        if run is None:
            return
        params = run.job.params
        local = Path(tmp) / Path(params["upload"]).name
        with default_storage.open(params["upload"], "rb") as src, local.open("wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
        try:
            if local.suffix.lower() == ".zip":
                local = extract_zip(local, Path(tmp) / "unpacked")
            outcome = prompts_import(
                path=local,
                source_name=params["source"],
                fmt=params["format"],
                skip_bad=params["skip_bad"],
                user=run.job.created_by,
            )
        except ImportRejected as exc:
            run.set_metrics(rows_total=exc.parsed.rows_total, rejected=exc.parsed.report[:200])
            raise JobFailed(str(exc)) from None
        except (ArchiveRejected, ValueError) as exc:
            raise JobFailed(str(exc)) from None
        run.set_metrics(
            source_id=outcome.source.pk,
            rows_total=outcome.rows_total,
            created=outcome.created,
            duplicates=outcome.duplicates,
            rejected=outcome.rejected[:200],
        )
        run.log(f"{outcome.created} prompts imported into {outcome.source.name}")
