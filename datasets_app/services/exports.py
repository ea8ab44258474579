"""Services for exporting a dataset version and importing preference files back.

An export is made only from a version's frozen rows, so the same version always exports to
the same bytes. Files: `train.parquet` / `eval.parquet` (DPO or SFT layout of DESIGN.md
section 5), `README.md` (the dataset card) and, for SteerLM, `train.jsonl` / `eval.jsonl`
in the NeMo-Aligner layout with an `images/` folder.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction

from annotation.models import Completion, JudgeConfig, PairPick, Rating
from config.names import safe_name
from datasets_app.core.curation import PreferenceRow, SftRow
from datasets_app.core.curation.strategies import LETTERS
from datasets_app.core.export import (
    DPO_FEATURES,
    KTO_FEATURES,
    SFT_FEATURES,
    ExportItem,
    dataset_card,
    read_dpo_parquet,
    read_sft_parquet,
    write_dpo_parquet,
    write_kto_parquet,
    write_nemo_jsonl,
    write_sft_parquet,
)
from datasets_app.core.imports import ImageLimits, ImageRejected, ValidImage, validate_image
from datasets_app.core.imports.images import check_image_count, check_total_pixels
from datasets_app.models import DatasetRow, DatasetVersion, Prompt, PromptImage, Source
from datasets_app.services.imports import import_limits
from training.models import Checkpoint
from workers.jobs import JobFailed, job_create, job_enqueue, job_running
from workers.models import Job


def _items(version: DatasetVersion, split: str) -> Iterator[ExportItem]:
    rows = (
        DatasetRow.objects.filter(version=version, split=split)
        .select_related("prompt")
        .prefetch_related("prompt__more_images")
        .order_by("position")
    )
    for r in rows.iterator(chunk_size=500):
        image = r.prompt.image.name or None
        more = tuple(extra.image.name for extra in r.prompt.more_images.all())
        if version.kind == DatasetVersion.Kind.DPO:
            row: PreferenceRow | SftRow = PreferenceRow(
                prompt_id=r.prompt_id,
                question=r.question,
                chosen=r.chosen,
                rejected=r.rejected,
                chosen_id=r.chosen_completion_id,
                rejected_id=r.rejected_completion_id,
                chosen_scores=r.chosen_scores,
                rejected_scores=r.rejected_scores,
                margin=r.margin,
                rater=r.rater,
                split=r.split,
            )
        else:
            row = SftRow(
                prompt_id=r.prompt_id,
                question=r.question,
                response=r.chosen,
                completion_id=r.chosen_completion_id,
                scores=r.chosen_scores,
                rater=r.rater,
                label=r.label,
                split=r.split,
            )
        yield ExportItem(
            row=row,
            image_key=image,
            more_image_keys=more,
            turns=tuple(r.prompt.turns),
            reference=prompt_reference(r.prompt),
        )


def prompt_reference(prompt: Prompt) -> str:
    """The answer a prompt is checked against: its reference answer, or for a
    multiple-choice prompt the right letter as LLaVA's ScienceQA targets end."""
    if prompt.reference_answer.strip():
        return prompt.reference_answer.strip()
    if prompt.answer_index is not None and prompt.answer_index < len(prompt.choices):
        return f"The answer is {LETTERS[prompt.answer_index]}."
    return ""


def _load_image(key: str) -> bytes:
    with default_storage.open(key, "rb") as handle:
        return handle.read()


def _raters(version: DatasetVersion) -> list[dict[str, Any]]:
    """The judges whose ratings the version's completions carry, with model and prompt."""
    completion_ids = set(
        version.rows.exclude(chosen_completion=None).values_list("chosen_completion", flat=True)
    ) | set(
        version.rows.exclude(rejected_completion=None).values_list("rejected_completion", flat=True)
    )
    judges = (
        JudgeConfig.objects.filter(ratings__completion_id__in=completion_ids)
        .distinct()
        .order_by("name")
    )
    raters = [
        {
            "rater": f"judge:{j.pk}",
            "name": j.name,
            "provider": j.provider,
            "model": j.model,
            "prompt_version": j.prompt_version,
            "temperature": j.temperature,
        }
        for j in judges
    ]
    humans = (
        Rating.objects.filter(completion_id__in=completion_ids, user__isnull=False)
        .values("user_id")
        .distinct()
        .count()
    )
    if humans:
        raters.append({"rater": "annotators", "count": humans})
    return raters


def dataset_version_export(*, version: DatasetVersion, out_dir: str | Path) -> list[Path]:
    """Write the version's files into `out_dir` (each written to a temporary name first)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    splits = [s for s in ("train", "eval") if version.rows.filter(split=s).exists()]
    written = []
    for split in splits:
        path = out / f"{split}.parquet"
        if version.kind == DatasetVersion.Kind.DPO:
            write_dpo_parquet(path, _items(version, split), _load_image)
        elif version.kind == DatasetVersion.Kind.KTO:
            write_kto_parquet(path, _items(version, split), _load_image)
        else:
            write_sft_parquet(
                path,
                _items(version, split),
                _load_image,
                steerlm=version.kind == DatasetVersion.Kind.STEERLM,
            )
        written.append(path)
        if version.kind == DatasetVersion.Kind.STEERLM:
            jsonl = out / f"{split}.jsonl"
            write_nemo_jsonl(jsonl, _items(version, split), _load_image)
            written.append(jsonl)
    features = {
        DatasetVersion.Kind.DPO: DPO_FEATURES,
        DatasetVersion.Kind.KTO: KTO_FEATURES,
    }.get(version.kind, SFT_FEATURES)
    card = dataset_card(
        name=version.name,
        version=version.version,
        kind=version.kind,
        strategy=version.strategy,
        params=version.params,
        rater_selection=version.rater_selection,
        raters=_raters(version),
        counts={s: version.rows.filter(split=s).count() for s in splits},
        sources=[{"id": s.pk, "name": s.name, "kind": s.kind} for s in version.sources.all()],
        checksum=version.checksum,
        features=features,
        data_files={s: f"{s}.parquet" for s in splits},
    )
    readme = out / "README.md"
    tmp = readme.with_name(".README.md.tmp")
    tmp.write_text(card)
    tmp.replace(readme)
    written.append(readme)
    return written


def dataset_version_by_spec(spec: str) -> DatasetVersion:
    """`NAME` (the latest version) or `NAME@VERSION`."""
    name, _, number = spec.partition("@")
    versions = DatasetVersion.objects.filter(name=name, status=DatasetVersion.Status.READY)
    if number:
        if not number.isdigit():
            raise ValueError(f"version must be a number: {spec!r}")
        versions = versions.filter(version=int(number))
    version = versions.order_by("-version").first()
    if version is None:
        raise ValueError(f"no dataset version {spec!r}")
    return version


def export_enqueue(*, version: DatasetVersion, user: Any = None) -> Job:
    job = job_create(
        kind=Job.Kind.EXPORT,
        title=f"export {version}",
        params={"version_id": version.pk},
        created_by=user,
    )
    job_enqueue(job)
    return job


def _store(name: str, path: Path) -> None:
    """Put a local file at storage `name`, replacing what an earlier export left there (the
    name stays exact: storage would otherwise pick a free variant). Through the storage
    API, so that object storage streams it up, in parts when large (config/storage.py)."""
    if default_storage.exists(name):
        default_storage.delete(name)
    with path.open("rb") as handle:
        default_storage.save(name, File(handle, name=path.name))


def export_job_run(*, job_id: int) -> None:
    """Export into a temporary folder, then copy the files into storage for download."""
    with job_running(job_id) as run, tempfile.TemporaryDirectory(prefix="studio-export-") as tmp:
        if run is None:
            return
        version = DatasetVersion.objects.filter(pk=run.job.params["version_id"]).first()
        if version is None:
            raise JobFailed("the dataset version no longer exists")
        try:  # rows from before names were checked may still hold a path
            folder = safe_name(version.name, "dataset name")
        except ValueError as exc:
            raise JobFailed(f"{exc}; rename the version first") from None
        files = dataset_version_export(version=version, out_dir=tmp)
        prefix = f"exports/{folder}/v{version.version}-{version.checksum[:12]}"
        for path in files:
            _store(f"{prefix}/{path.name}", path)
        images = Path(tmp) / "images"
        if images.is_dir():
            for image in sorted(images.iterdir()):
                _store(f"{prefix}/images/{image.name}", image)
        version.export_path = prefix
        version.save(update_fields=["export_path"])
        run.set_metrics(files=[p.name for p in files], export_path=prefix)


def export_files(version: DatasetVersion) -> list[tuple[str, str]]:
    """(file name, download URL) of the version's last export in storage."""
    if not version.export_path:
        return []
    # Not `exists(folder)`: object storage has no folders, only keys under a prefix.
    try:
        _, files = default_storage.listdir(version.export_path)
    except FileNotFoundError:  # local storage, the folder removed
        return []
    return [(f, default_storage.url(f"{version.export_path}/{f}")) for f in sorted(files)]


# --- importing preference files back -------------------------------------------------------


def preference_import(
    *, path: str | Path, source_name: str, fmt: str = "dpo", user: Any = None
) -> dict[str, int]:
    """Import an exported (or any TRL-layout) parquet back.

    `dpo`: each pair becomes a prompt, two completions and an imported pick, which
    `human_pick` reads, so imported and local sets mix. `sft`: a prompt and its answer (a
    SteerLM label, if any, kept in the completion's sampling record).
    All-or-nothing: every row is read and every image checked before anything is written.
    """
    path = Path(path)
    source_name = safe_name(source_name, "source name")
    if fmt not in (Source.Kind.DPO, Source.Kind.SFT):
        raise ValueError(f"unknown format {fmt!r}; use dpo or sft")
    if Source.objects.filter(name=source_name).exclude(kind=fmt).exists():
        raise ValueError(f"source {source_name!r} exists and holds another kind of import")
    limits = import_limits()
    rows, errors = [], []
    records = (
        (
            (r.question, [r.chosen, r.rejected], r.images, r.turns, r.extra, "")
            for r in read_dpo_parquet(path)
        )
        if fmt == Source.Kind.DPO
        else (
            (r.question, [r.response], r.images, r.turns, r.extra, r.label)
            for r in read_sft_parquet(path)
        )
    )
    with tempfile.TemporaryDirectory(prefix="studio-answers-") as staging:
        for n, (question, answers, data, turns, extra, label) in enumerate(records, start=1):
            try:
                images = _checked_images(data, limits)
            except ImageRejected as exc:
                errors.append(f"row {n}: {exc}")
                continue
            for image in images:
                staged = Path(staging) / image.sha256
                if not staged.exists():
                    staged.write_bytes(image.data)
            if not question.strip() or not all(a.strip() for a in answers):
                errors.append(f"row {n}: the prompt or an answer is empty")
                continue
            rows.append((question, answers, images, list(turns), extra, label))
        if errors:
            first = "; ".join(errors[:5])
            raise ValueError(f"{len(errors)} rows are invalid, nothing was imported: {first}")
        return _write_answers(rows, path, source_name, fmt, Path(staging), user)


def _checked_images(data: tuple[bytes, ...], limits: ImageLimits) -> list[ValidImage]:
    """Every image of a row, validated, within the per-prompt count and pixel limits."""
    check_image_count(len(data), limits)
    images = [validate_image(raw, limits) for raw in data]
    check_total_pixels(images, limits)
    return images


def _stored(image: ValidImage, staging: Path) -> str:
    name = image.storage_name
    if default_storage.exists(name):
        return name
    return default_storage.save(name, ContentFile((staging / image.sha256).read_bytes()))


def _write_answers(
    rows: list, path: Path, source_name: str, fmt: str, staging: Path, user: Any
) -> dict:
    created = duplicates = 0
    with transaction.atomic():
        source, _ = Source.objects.get_or_create(
            name=source_name, defaults={"kind": fmt, "created_by": user}
        )
        checkpoint, _ = Checkpoint.objects.get_or_create(
            name=f"imported:{source_name}"[:200],
            defaults={"model_path": "(imported answers)", "notes": f"answers from {path.name}"},
        )
        for question, answers, images, turns, extra, label in rows:
            identity = [images[0].sha256 if images else "", question, *answers, label]
            if len(images) > 1 or turns:  # single-image, single-turn keys stay as they were
                identity.append(json.dumps([[i.sha256 for i in images[1:]], turns]))
            key = hashlib.sha256("\x1f".join(identity).encode()).hexdigest()
            if Prompt.objects.filter(source=source, content_hash=key).exists():
                duplicates += 1
                continue
            first = images[0] if images else None
            prompt = Prompt.objects.create(
                source=source,
                image=_stored(first, staging) if first else "",
                image_sha256=first.sha256 if first else "",
                image_width=first.width if first else None,
                image_height=first.height if first else None,
                question=question,
                turns=turns,
                content_hash=key,
                metadata={k: v for k, v in extra.items() if isinstance(v, str | int | float)},
            )
            PromptImage.objects.bulk_create(
                [
                    PromptImage(
                        prompt=prompt,
                        position=position,
                        image=_stored(image, staging),
                        image_sha256=image.sha256,
                        image_width=image.width,
                        image_height=image.height,
                    )
                    for position, image in enumerate(images[1:], start=1)
                ]
            )
            completions = [
                Completion.objects.create(
                    prompt=prompt,
                    checkpoint=checkpoint,
                    text=text,
                    sample_index=i,
                    sampling={"steerlm_label": label} if label else {},
                )
                for i, text in enumerate(answers)
            ]
            if fmt == Source.Kind.DPO:
                PairPick.objects.create(
                    prompt=prompt, source=source, chosen=completions[0], rejected=completions[1]
                )
            created += 1
        source.file_name = str(path)
        source.rows_total = len(rows)
        source.rows_imported = created
        source.rows_duplicate = duplicates
        source.save()
    return {"created": created, "duplicates": duplicates, "source_id": source.pk}
