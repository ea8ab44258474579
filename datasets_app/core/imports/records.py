"""Read prompt files in the three import formats and turn each row into a record or an error.

Formats:
- ``prompts``: parquet or JSONL (image bytes, base64 text or a data: URL, or a path relative
  to the file), or an image folder with ``manifest.jsonl`` / ``manifest.csv``.
  Fields: question, image (or images: a list, 1..N), reference_answer, choices,
  answer_index, hint, subject, split, metadata. Instead of question, a conversation of
  several turns (core/conversation.py): ``prompt`` or ``messages`` in TRL's conversational
  layout, or LLaVA-Instruct's ``conversations`` with ``<image>`` markers; a trailing
  assistant turn is the reference answer. A prompt needs at least one image.
- ``scienceqa``: the HF ScienceQA layout (question, choices, answer index, hint, image or
  none for text-only questions, subject, lecture, solution, ...).
- ``pope``: question, answer yes/no, image, category, question_id.
Columns a format does not name go into the prompt's metadata.
"""

from __future__ import annotations

import base64
import binascii
import csv
import hashlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from datasets_app.core.conversation import ConversationInvalid, from_llava, from_messages
from datasets_app.core.imports.images import (
    ImageLimits,
    ImageRejected,
    ValidImage,
    check_image_count,
    check_total_pixels,
    has_image_header,
    validate_image,
)

FORMATS = ("prompts", "scienceqa", "pope")
SPLITS = {"train": "train", "validation": "validation", "val": "validation", "dev": "validation"}
SPLITS |= {"test": "test", "minival": "validation", "minitest": "test"}
MANIFEST_NAMES = ("manifest.jsonl", "manifest.csv")
MAX_QUESTION_CHARS = 20_000


@dataclass(frozen=True)
class RowError:
    row: int
    error: str
    field: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"row": self.row, "field": self.field, "error": self.error}

    def __str__(self) -> str:
        where = f"row {self.row}" + (f", field {self.field!r}" if self.field else "")
        return f"{where}: {self.error}"


@dataclass
class PromptRecord:
    row: int
    question: str
    image: ValidImage | None  # the first image
    # The second and later images, and the turns before the final user turn.
    more_images: list[ValidImage] = field(default_factory=list)
    turns: list[dict[str, Any]] = field(default_factory=list)
    reference_answer: str = ""
    choices: list[str] = field(default_factory=list)
    answer_index: int | None = None
    hint: str = ""
    subject: str = ""
    split: str = "train"
    metadata: dict[str, Any] = field(default_factory=dict)
    # Part of the identity beyond the content: POPE asks the same question about the same
    # image in each of its splits, and each split must stay whole.
    identity_extra: str = ""

    @property
    def content_hash(self) -> str:
        """What makes two rows the same prompt: image, question, choices, answer, hint."""
        key: list[Any] = [
            self.image.sha256 if self.image else "",
            self.question,
            self.choices,
            self.answer_index,
            self.hint,
            self.reference_answer,
            *([self.identity_extra] if self.identity_extra else []),
        ]
        if self.more_images or self.turns:  # single-turn hashes stay as they were
            key.append([[i.sha256 for i in self.more_images], self.turns])
        return hashlib.sha256(json.dumps(key, ensure_ascii=False).encode()).hexdigest()


@dataclass
class ParseResult:
    records: list[PromptRecord]
    errors: list[RowError]
    rows_total: int
    file_sha256: str

    @property
    def report(self) -> list[dict[str, Any]]:
        return [e.to_dict() for e in self.errors]


class RowInvalid(ValueError):
    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


# --- reading raw rows ------------------------------------------------------------------------


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with file.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def _iter_parquet(path: Path) -> Iterator[tuple[int, dict[str, Any] | RowInvalid]]:
    import pyarrow.parquet as pq

    row = 0
    # Small batches: a row group of large images must not sit in memory all at once.
    for batch in pq.ParquetFile(path).iter_batches(batch_size=32):
        for item in batch.to_pylist():
            row += 1
            yield row, item


def _iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any] | RowInvalid]]:
    # Bytes, decoded line by line: a line that is not UTF-8 is that row's error (a whole
    # binary file renamed .jsonl then fails on its first row), not a codec traceback.
    with path.open("rb") as handle:
        for row, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8-sig" if row == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                yield row, RowInvalid(_not_utf8(raw, exc))
                continue
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                yield row, RowInvalid(f"invalid JSON: {exc.msg} at column {exc.colno}")
                continue
            if not isinstance(item, dict):
                yield row, RowInvalid(f"expected a JSON object, got {type(item).__name__}")
                continue
            yield row, item


def _not_utf8(raw: bytes, exc: UnicodeDecodeError) -> str:
    return (
        f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); "
        "save the file as UTF-8"
    )


def _utf8_lines(path: Path, handle: Any) -> Iterator[str]:
    for number, raw in enumerate(handle, start=1):
        try:
            yield raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            # A CSV record may span lines, so the rest cannot be read reliably: file level.
            raise ValueError(f"{path.name}, line {number}: {_not_utf8(raw, exc)}") from None


def _iter_csv(path: Path) -> Iterator[tuple[int, dict[str, Any] | RowInvalid]]:
    with path.open("rb") as handle:
        # Row numbers count the header as row 1, as a spreadsheet shows them.
        for row, item in enumerate(csv.DictReader(_utf8_lines(path, handle)), start=2):
            yield row, {k: v for k, v in item.items() if k is not None and v not in ("", None)}


def iter_raw_rows(path: Path) -> tuple[Path, Iterator[tuple[int, dict[str, Any] | RowInvalid]]]:
    """Return the folder that relative image paths resolve against, and the raw rows."""
    if path.is_dir():
        for name in MANIFEST_NAMES:
            manifest = path / name
            if manifest.exists():
                return path, iter_raw_rows(manifest)[1]
        raise ValueError(f"{path} is a folder without {' or '.join(MANIFEST_NAMES)}")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return path.parent, _iter_parquet(path)
    if suffix in (".jsonl", ".ndjson"):
        return path.parent, _iter_jsonl(path)
    if suffix == ".csv":
        return path.parent, _iter_csv(path)
    raise ValueError(f"{path.name}: unsupported file type {suffix or '(none)'}")


# --- turning raw values into fields ----------------------------------------------------------


def _short(text: str, limit: int = 60) -> str:
    """A value quoted in a message: a long base64 string must not fill the report."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # e.g. a name longer than the file system allows
        return False


def _read_relative(base: Path, name: str) -> bytes:
    candidate = Path(name)
    if candidate.is_absolute():
        raise RowInvalid(
            f"image path {_short(name)} must be relative to the imported file", "image"
        )
    resolved = (base / candidate).resolve()
    if not resolved.is_relative_to(base.resolve()):
        raise RowInvalid(f"image path {_short(name)} points outside the imported folder", "image")
    if not _is_file(resolved):
        raise RowInvalid(
            f"image {_short(name)} is neither a file next to the imported file nor base64 "
            "of an image",
            "image",
        )
    return resolved.read_bytes()


_BASE64_TEXT = re.compile(r"[A-Za-z0-9+/=\s]+")


def _base64_image(text: str, base: Path) -> bytes | None:
    """The bytes of `text` when it is plain base64 of an image (not a data: URL), else None.

    A string is read as base64 only when it is not an existing file next to the imported
    file, decodes as strict base64, and the bytes start with an image header Pillow knows.
    A path practically never passes all three (and "photos/cat" decodes to noise), so a
    missing file is still reported as a missing file.
    """
    relative = not Path(text).is_absolute()
    if relative and _is_file(base / text):
        return None
    if len(text) < 16 or not _BASE64_TEXT.fullmatch(text):
        return None
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        return None
    return data if has_image_header(data) else None


def _image_bytes(value: Any, base: Path) -> bytes | None:
    """Accept raw bytes, an HF {bytes, path} struct (bytes as base64 in JSON), a data URL,
    plain base64 of an image (see _base64_image), or a path relative to the imported file."""
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, dict):
        data, name = value.get("bytes"), value.get("path")
        if isinstance(data, bytes | bytearray) and data:
            return bytes(data)
        if isinstance(data, str) and data:
            return _b64(data.split(",", 1)[-1] if data.startswith("data:") else data)
        return _read_relative(base, str(name)) if name else None
    if isinstance(value, str):
        if value.startswith("data:"):
            return _b64(value.split(",", 1)[-1])
        data = _base64_image(value, base)
        return data if data is not None else _read_relative(base, value)
    raise RowInvalid(
        f"image must be bytes, a path or a {{bytes, path}} struct, not {type(value).__name__}",
        "image",
    )


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise RowInvalid("image bytes are not valid base64", "image") from None


def _text(item: dict[str, Any], name: str, *, required: bool = False) -> str:
    value = item.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise RowInvalid(f"missing required field {name!r}", name)
        return ""
    if not isinstance(value, str | int | float):
        raise RowInvalid(f"{name} must be text, not {type(value).__name__}", name)
    text = str(value).strip()
    if "\x00" in text:
        raise RowInvalid(f"{name} contains a NUL character", name)
    if len(text) > MAX_QUESTION_CHARS:
        raise RowInvalid(f"{name} is longer than {MAX_QUESTION_CHARS:,} characters", name)
    return text


def _choices(item: dict[str, Any]) -> list[str]:
    value = item.get("choices")
    if value is None or value == "":
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise RowInvalid("choices must be a list (or a JSON list in CSV)", "choices") from None
    if not isinstance(value, list | tuple) or not all(isinstance(c, str | int) for c in value):
        raise RowInvalid("choices must be a list of strings", "choices")
    return [str(c) for c in value]


def _answer_index(value: Any, choices: list[str], name: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        index = int(value)
    except (TypeError, ValueError):
        raise RowInvalid(f"{name} must be an integer index into choices", name) from None
    if not choices:
        raise RowInvalid(f"{name} given without choices", name)
    if not 0 <= index < len(choices):
        raise RowInvalid(f"{name} {index} is outside the {len(choices)} choices", name)
    return index


def _split(item: dict[str, Any], default: str) -> str:
    raw = item.get("split")
    if raw in (None, ""):
        return default
    split = SPLITS.get(str(raw).strip().lower())
    if split is None:
        raise RowInvalid(f"unknown split {raw!r}; use train, validation or test", "split")
    return split


def _metadata(item: dict[str, Any], known: set[str]) -> dict[str, Any]:
    extra = item.get("metadata")
    if isinstance(extra, str):
        try:
            extra = json.loads(extra)
        except json.JSONDecodeError:
            raise RowInvalid("metadata must be a JSON object", "metadata") from None
    if extra is not None and not isinstance(extra, dict):
        raise RowInvalid("metadata must be an object", "metadata")
    meta = dict(extra or {})
    for key, value in item.items():
        if key in known or key == "metadata" or value is None:
            continue
        if isinstance(value, bytes | bytearray):
            continue  # binary side columns do not belong in JSON metadata
        meta[key] = value
    try:
        encoded = json.dumps(meta)
    except (TypeError, ValueError):
        raise RowInvalid("metadata values must be JSON (text, numbers, lists, objects)") from None
    if "\\u0000" in encoded:
        raise RowInvalid("metadata contains a NUL character", "metadata")
    return meta


def _validated_image(
    item: dict[str, Any], base: Path, limits: ImageLimits, *, required: bool
) -> ValidImage | None:
    raw = _image_bytes(item.get("image", item.get("image_path")), base)
    if raw is None:
        if required:
            raise RowInvalid("missing required field 'image'", "image")
        return None
    try:
        return validate_image(raw, limits)
    except ImageRejected as exc:
        raise RowInvalid(str(exc), "image") from None


def _validated_images(item: dict[str, Any], base: Path, limits: ImageLimits) -> list[ValidImage]:
    """A row's images in order: the `images` list, else the single `image`; at least one,
    within the per-prompt limits on count and total pixels."""
    values = item.get("images")
    if values is None:
        image = _validated_image(item, base, limits, required=True)
        return [image] if image is not None else []
    if not isinstance(values, list | tuple) or not values:
        raise RowInvalid("images must be a non-empty list of images", "images")
    try:
        check_image_count(len(values), limits)
    except ImageRejected as exc:
        raise RowInvalid(str(exc), "images") from None
    images = []
    for n, value in enumerate(values, start=1):
        raw = _image_bytes(value, base)
        if raw is None:
            raise RowInvalid(f"image {n} of {len(values)} is empty", "images")
        try:
            images.append(validate_image(raw, limits))
        except ImageRejected as exc:
            raise RowInvalid(f"image {n} of {len(values)}: {exc}", "images") from None
    try:
        check_total_pixels(images, limits)
    except ImageRejected as exc:
        raise RowInvalid(str(exc), "images") from None
    return images


CONVERSATION_FIELDS = ("prompt", "messages", "conversations")


def _conversation(item: dict[str, Any], images: int) -> Any:
    """The row's conversation, when it has one instead of a plain question."""
    try:
        if isinstance(item.get("conversations"), list | tuple):
            return from_llava(item["conversations"], images)
        for name in ("prompt", "messages"):
            if isinstance(item.get(name), list | tuple):
                return from_messages(item[name], images, field=name)
        for name in CONVERSATION_FIELDS:
            if isinstance(item.get(name), str) and name != "prompt":
                raise RowInvalid(f"{name} must be a list of turns, not text", name)
    except ConversationInvalid as exc:
        raise RowInvalid(str(exc), exc.field) from None
    return None


PROMPT_FIELDS = {"question", "image", "image_path", "reference_answer", "answer", "choices"}
PROMPT_FIELDS |= {"answer_index", "hint", "subject", "split", "images", *CONVERSATION_FIELDS}
SCIENCEQA_FIELDS = {"question", "image", "choices", "answer", "hint", "subject", "split"}
POPE_FIELDS = {"question", "image", "answer", "split"}


def _prompt_record(row: int, item: dict[str, Any], base: Path, limits: ImageLimits) -> PromptRecord:
    choices = _choices(item)
    images = _validated_images(item, base, limits)
    conversation = _conversation(item, len(images))
    if conversation is not None:
        if len(conversation.question) > MAX_QUESTION_CHARS:
            raise RowInvalid(f"the final turn is longer than {MAX_QUESTION_CHARS:,} characters")
        question, turns, answer = conversation.question, conversation.turns, conversation.answer
    else:
        question, turns, answer = _text(item, "question", required=True), [], ""
    return PromptRecord(
        row=row,
        question=question,
        image=images[0],
        more_images=images[1:],
        turns=turns,
        reference_answer=_text(item, "reference_answer") or _text(item, "answer") or answer,
        choices=choices,
        answer_index=_answer_index(item.get("answer_index"), choices, "answer_index"),
        hint=_text(item, "hint"),
        subject=_text(item, "subject"),
        split=_split(item, "train"),
        metadata=_metadata(item, PROMPT_FIELDS),
    )


def _scienceqa_record(
    row: int, item: dict[str, Any], base: Path, limits: ImageLimits
) -> PromptRecord:
    choices = _choices(item)
    if len(choices) < 2:
        raise RowInvalid("a ScienceQA row needs at least two choices", "choices")
    if item.get("answer") is None:
        raise RowInvalid("missing required field 'answer'", "answer")
    return PromptRecord(
        row=row,
        question=_text(item, "question", required=True),
        # ScienceQA has text-only questions: no image is allowed here.
        image=_validated_image(item, base, limits, required=False),
        choices=choices,
        answer_index=_answer_index(item.get("answer"), choices, "answer"),
        hint=_text(item, "hint"),
        subject=_text(item, "subject"),
        split=_split(item, "train"),
        metadata=_metadata(item, SCIENCEQA_FIELDS),
    )


def _pope_record(row: int, item: dict[str, Any], base: Path, limits: ImageLimits) -> PromptRecord:
    answer = _text(item, "answer", required=True).lower()
    if answer not in ("yes", "no"):
        raise RowInvalid(f"a POPE answer is 'yes' or 'no', not {answer!r}", "answer")
    return PromptRecord(
        row=row,
        question=_text(item, "question", required=True),
        image=_validated_image(item, base, limits, required=True),
        reference_answer=answer,
        split=_split(item, "test"),
        metadata=_metadata(item, POPE_FIELDS),
        identity_extra=str(item.get("category") or ""),
    )


_BUILDERS = {"prompts": _prompt_record, "scienceqa": _scienceqa_record, "pope": _pope_record}


ImageSink = Callable[[ValidImage], None]


def parse_source(
    path: str | Path, fmt: str, limits: ImageLimits, *, image_sink: ImageSink | None = None
) -> ParseResult:
    """Validate every row of `path`; raise ValueError only when the file itself is unusable.

    With `image_sink`, each valid image's bytes go to the sink and the record keeps only
    its hash and size, so memory stays flat however large the file (ScienceQA's train
    split holds gigabytes of images).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; formats are {', '.join(FORMATS)}")
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path} does not exist")
    base, rows = iter_raw_rows(path)
    build = _BUILDERS[fmt]
    records: list[PromptRecord] = []
    errors: list[RowError] = []
    total = 0
    try:
        for row, item in rows:
            total += 1
            try:
                if isinstance(item, RowInvalid):
                    raise item
                record = build(row, item, base, limits)
                if image_sink is not None and record.image is not None:
                    image_sink(record.image)
                    record.image = replace(record.image, data=b"")
                    for image in record.more_images:
                        image_sink(image)
                    record.more_images = [replace(i, data=b"") for i in record.more_images]
                records.append(record)
            except RowInvalid as exc:
                errors.append(RowError(row=row, error=str(exc), field=exc.field))
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path.name} cannot be read: {exc}") from exc
    except Exception as exc:
        if type(exc).__module__.startswith("pyarrow"):
            raise ValueError(f"{path.name} is not a readable parquet file: {exc}") from exc
        raise
    return ParseResult(records, errors, total, _file_sha256(path))
