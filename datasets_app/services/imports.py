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

from config.media import import_report_folder
from config.names import safe_name
from datasets_app.core.imports import (
    ImageLimits,
    ParseResult,
    PromptRecord,
    ValidImage,
    parse_source,
)
from datasets_app.core.imports.archives import ArchiveRejected, extract_zip
from datasets_app.models import Prompt, PromptImage, Source
from workers.jobs import JobFailed, job_create, job_enqueue, job_running
from workers.models import Job

INSERT_BATCH = 500


class ImportRejected(Exception):
    """The file had bad rows and skipping them was not asked for, or no row at all was
    valid: nothing was written.

    Each entry point names its own way to skip bad rows (a command flag, a form checkbox):
    `explain(how_to_skip)` puts it into the message; str() says it generically.
    """

    GENERIC_HOW_TO_SKIP = "import only the valid rows by skipping bad rows"

    def __init__(self, parsed: ParseResult, report_name: str) -> None:
        self.parsed = parsed
        self.report_name = report_name
        super().__init__(self.explain(self.GENERIC_HOW_TO_SKIP))

    def explain(self, how_to_skip: str) -> str:
        parsed = self.parsed
        first = "; ".join(str(e) for e in parsed.errors[:3])
        more = f" (and {len(parsed.errors) - 3} more)" if len(parsed.errors) > 3 else ""
        if not parsed.records:  # skipping would leave nothing: do not suggest it
            head = f"none of the {parsed.rows_total} rows is valid"
            way_out = "Fix them and import again"
        else:
            head = f"{len(parsed.errors)} of {parsed.rows_total} rows are invalid"
            way_out = f"Fix them, or {how_to_skip}"
        return (
            f"{head}, so nothing was imported: {first}{more}. {way_out}. "
            f"Full report: {self.report_name}"
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
        max_bytes=settings.IMPORT_MAX_IMAGE_BYTES,
        max_pixels=settings.IMPORT_MAX_IMAGE_PIXELS,
        max_images=settings.IMPORT_MAX_PROMPT_IMAGES,
        max_total_pixels=settings.IMPORT_MAX_PROMPT_PIXELS,
    )


def _save_report(source_name: str, parsed: ParseResult, path: Path, user: Any) -> str:
    stamp = timezone.now().strftime("%Y%m%dT%H%M%S")
    body = {
        "source": source_name,
        "file": str(path),
        "file_sha256": parsed.file_sha256,
        "rows_total": parsed.rows_total,
        "rows_rejected": len(parsed.errors),
        "errors": parsed.report,
    }
    # The owner's folder is what the media view checks (config.media): reports name rows
    # and files of one user's import, not for other annotators' eyes.
    folder = import_report_folder(user)
    name = f"{folder}/{slugify(source_name) or 'source'}-{stamp}.json"
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
    source_name = safe_name(source_name, "source name")
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
    report_name = _save_report(source_name, parsed, path, user) if parsed.errors else ""
    # Skipping bad rows must still leave something to import: an empty source would
    # show up in every filter as if the import had worked.
    if parsed.errors and (not skip_bad or not parsed.records):
        raise ImportRejected(parsed, report_name)
    if not parsed.records:
        raise ValueError(f"{path.name} has no rows, so nothing was imported")

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
    more_names = {h: [staging.store(i) for i in r.more_images] for h, r in new_records}

    with transaction.atomic():
        source, _ = Source.objects.get_or_create(
            name=source_name, defaults={"kind": fmt, "created_by": user}
        )
        created = Prompt.objects.bulk_create(
            [
                Prompt(
                    source=source,
                    image=image_names[h],
                    image_sha256=r.image.sha256 if r.image else "",
                    image_width=r.image.width if r.image else None,
                    image_height=r.image.height if r.image else None,
                    question=r.question,
                    turns=r.turns,
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
        PromptImage.objects.bulk_create(
            [
                PromptImage(
                    prompt=prompt,
                    position=position,
                    image=name,
                    image_sha256=image.sha256,
                    image_width=image.width,
                    image_height=image.height,
                )
                for prompt, (h, r) in zip(created, new_records, strict=True)
                for position, (name, image) in enumerate(
                    zip(more_names[h], r.more_images, strict=True), start=1
                )
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
    *,
    upload: Any,
    source_name: str,
    fmt: str,
    skip_bad: bool,
    how_to_skip: str = ImportRejected.GENERIC_HOW_TO_SKIP,
    user: Any = None,
) -> Job:
    """Keep an uploaded file in storage and queue its import as a job.

    `how_to_skip` is how the caller's own page says "skip bad rows", for the job's error.
    """
    file_name = Path(upload.name).name
    source_name = safe_name(source_name, "source name")
    if not file_name.lower().endswith(UPLOAD_SUFFIXES):
        raise ValueError(f"{file_name}: upload one of {', '.join(UPLOAD_SUFFIXES)}")
    stored = default_storage.save(f"uploads/{uuid.uuid4().hex}/{file_name}", upload)
    job = job_create(
        kind=Job.Kind.IMPORT,
        title=f"import {file_name} into {source_name}",
        params={
            "upload": stored,
            "source": source_name,
            "format": fmt,
            "skip_bad": skip_bad,
            "how_to_skip": how_to_skip,
        },
        created_by=user,
    )
    job_enqueue(job)
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
            how_to_skip = params.get("how_to_skip") or ImportRejected.GENERIC_HOW_TO_SKIP
            raise JobFailed(exc.explain(how_to_skip)) from None
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
