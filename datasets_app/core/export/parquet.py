"""Stream curated rows into the parquet files that `datasets` loads and TRL trains on.

Pure core: no Django here (a test imports this package in a fresh interpreter). The caller
hands over `ExportItem`s and a `load_image(key) -> bytes` callable, so the bytes come from
Django storage in the service and from a dict in tests.

Layout (DESIGN.md section 5, TRL 1.16's vision collators):

- DPO: `images` (list of {bytes, path}), `prompt`, `chosen`, `rejected` in TRL's
  conversational form, then provenance: `prompt_id`, `chosen_scores`, `rejected_scores`,
  `margin`, `rater`, and the prompt's `reference` answer (null when it has none).
- SFT: `images`, `messages`, then `prompt_id`, `completion_id`, `scores`, `rater`, `label`.

A message is {role, content}; content is always a list of parts {type, text}. Arrow needs
one struct type for every part, so the image part is {"type": "image", "text": null}:
`datasets` gives it back as that dict, and TRL's `prepare_multimodal_messages` fills every
part of type "image" that has no "image" key with the row's next image. The struct must
therefore never grow an `image` field, or TRL would take the (null) field for a filled
image. Text-only rows get an empty `images` list and no image part. A conversation's `prompt` (or
`messages`) holds every earlier turn, and `images` every image of it, in the order the image
parts appear.

SteerLM (`write_sft_parquet(..., steerlm=True)`): NeMo-Aligner writes
`<extra_id_1>Assistant\\n<extra_id_2>{label}\\n{response}`, i.e. the label opens the
assistant turn. For a chat-template model we keep that place: the assistant content is
two text parts, `{label}\\n` then the response. Chat templates concatenate text parts, so
the model sees "ASSISTANT: helpfulness:4,...\\n{response}"; at inference the caller
prefills the assistant turn with the desired label and a newline. A separate part (not a
prefix inside the response's part) keeps the response recoverable exactly: the reader
drops the first part when it equals the row's `label` column plus a newline. Unlike
NeMo, which masks the label from the loss, TRL's `assistant_only_loss` trains on the
whole assistant turn, label included; that only adds a small extra target.

Files are written with `pyarrow.parquet.ParquetWriter`, one row group per
`row_group_size` rows (or earlier when the buffered image bytes pass `max_group_bytes`), so
memory stays flat in the number of rows. Image columns are stored PLAIN and uncompressed
and text columns with snappy and dictionaries, as `datasets.Dataset.to_parquet` does
(JPEG/PNG do not compress further). The HF features go into the schema metadata under
b"huggingface" so that `load_dataset("parquet", ...)` decodes images to PIL.

Writes are atomic (a temp file in the target folder, `os.replace` at the end, removed on
any error) and deterministic: parquet-cpp records no time, only its fixed `created_by`
version string, so the same rows give byte-identical files with the same pyarrow.

No rows give a valid file with no row groups, but `load_dataset` refuses an empty split
("corresponds to no data"): leave an empty split out of the card's `configs`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from datasets_app.core.conversation import prompt_messages
from datasets_app.core.curation.types import ATTRIBUTES, PreferenceRow, Scores, SftRow

__all__ = [
    "DPO_FEATURES",
    "DPO_SCHEMA",
    "KTO_FEATURES",
    "KTO_SCHEMA",
    "SFT_FEATURES",
    "SFT_SCHEMA",
    "ExportItem",
    "WriteStats",
    "atomic_output",
    "write_dpo_parquet",
    "write_kto_parquet",
    "write_sft_parquet",
]

ImageLoader = Callable[[str], bytes]

# ---------------------------------------------------------------------------------------
# Schemas

# Parquet names list children "element" and hands them back under that name; naming them so
# here makes the written schema equal the schema read back.


def _list(value_type: pa.DataType) -> pa.DataType:
    return pa.list_(pa.field("element", value_type))


_IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
_PART = pa.struct([("type", pa.string()), ("text", pa.string())])
_MESSAGES = _list(pa.struct([("role", pa.string()), ("content", _list(_PART))]))
_SCORES = pa.struct([(name, pa.float64()) for name in ATTRIBUTES])


def _value(dtype: str) -> dict[str, str]:
    return {"dtype": dtype, "_type": "Value"}


_HF_IMAGES = {"feature": {"_type": "Image"}, "_type": "List"}
_HF_MESSAGES = {
    "feature": {
        "role": _value("string"),
        "content": {
            "feature": {"type": _value("string"), "text": _value("string")},
            "_type": "List",
        },
    },
    "_type": "List",
}
_HF_SCORES = {name: _value("float64") for name in ATTRIBUTES}

# The `datasets` features (its JSON form, as `Features.to_dict()` writes it). Public: the
# dataset card lists them too.
DPO_FEATURES: dict[str, Any] = {
    "images": _HF_IMAGES,
    "prompt": _HF_MESSAGES,
    "chosen": _HF_MESSAGES,
    "rejected": _HF_MESSAGES,
    "prompt_id": _value("int64"),
    "chosen_scores": _HF_SCORES,
    "rejected_scores": _HF_SCORES,
    "margin": _value("float64"),
    "rater": _value("string"),
    "reference": _value("string"),
}
KTO_FEATURES: dict[str, Any] = {
    "images": _HF_IMAGES,
    "prompt": _HF_MESSAGES,
    "completion": _HF_MESSAGES,
    "label": _value("bool"),
    "prompt_id": _value("int64"),
    "completion_id": _value("int64"),
    "scores": _HF_SCORES,
    "rater": _value("string"),
}
SFT_FEATURES: dict[str, Any] = {
    "images": _HF_IMAGES,
    "messages": _HF_MESSAGES,
    "prompt_id": _value("int64"),
    "completion_id": _value("int64"),
    "scores": _HF_SCORES,
    "rater": _value("string"),
    "label": _value("string"),
}


def _schema(fields: list[tuple[str, pa.DataType]], features: dict[str, Any]) -> pa.Schema:
    assert [name for name, _ in fields] == list(features)
    # Fixed key order and separators: the metadata bytes, hence the file, never vary.
    meta = json.dumps({"info": {"features": features}}, sort_keys=False, separators=(", ", ": "))
    return pa.schema(fields, metadata={b"huggingface": meta.encode()})


DPO_SCHEMA = _schema(
    [
        ("images", _list(_IMAGE)),
        ("prompt", _MESSAGES),
        ("chosen", _MESSAGES),
        ("rejected", _MESSAGES),
        ("prompt_id", pa.int64()),
        ("chosen_scores", _SCORES),
        ("rejected_scores", _SCORES),
        ("margin", pa.float64()),
        ("rater", pa.string()),
        ("reference", pa.string()),
    ],
    DPO_FEATURES,
)
SFT_SCHEMA = _schema(
    [
        ("images", _list(_IMAGE)),
        ("messages", _MESSAGES),
        ("prompt_id", pa.int64()),
        ("completion_id", pa.int64()),
        ("scores", _SCORES),
        ("rater", pa.string()),
        ("label", pa.string()),
    ],
    SFT_FEATURES,
)

KTO_SCHEMA = _schema(
    [
        ("images", _list(_IMAGE)),
        ("prompt", _MESSAGES),
        ("completion", _MESSAGES),
        ("label", pa.bool_()),
        ("prompt_id", pa.int64()),
        ("completion_id", pa.int64()),
        ("scores", _SCORES),
        ("rater", pa.string()),
    ],
    KTO_FEATURES,
)

# ---------------------------------------------------------------------------------------
# Public types


@dataclass(frozen=True)
class ExportItem:
    """One curated row and the storage keys of its images (image_key None: a text-only
    prompt), with the conversation's earlier turns (core/conversation.py), if any."""

    row: PreferenceRow | SftRow
    image_key: str | None
    more_image_keys: tuple[str, ...] = ()
    turns: tuple[dict[str, Any], ...] = ()
    # The prompt's reference answer, when it has one: what online DPO's verifiable ranker
    # checks fresh samples against (training/core/recipes/online_dpo.py).
    reference: str = ""

    @property
    def image_keys(self) -> tuple[str, ...]:
        return () if self.image_key is None else (self.image_key, *self.more_image_keys)


@dataclass(frozen=True)
class WriteStats:
    rows: int
    bytes_written: int
    row_groups: int


# ---------------------------------------------------------------------------------------
# Atomic output


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a fresh temp path next to `path`; on success it replaces `path`, on error it
    is removed, so readers see the old file or the whole new one, never half a file.

    The temp file sits in the same folder so that `os.replace` is a rename on one
    filesystem (atomic), and it is fsynced first so that a crash cannot leave a renamed
    but empty file.
    """
    target = Path(path)
    tmp = target.with_name(f"{target.name}.tmp-{secrets.token_hex(8)}")
    # O_EXCL: never clobber anything; mode 0o666 lets the umask decide, as open() would.
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# ---------------------------------------------------------------------------------------
# Row conversion


def _text(text: str) -> dict[str, str | None]:
    return {"type": "text", "text": text}


_IMAGE_PART: dict[str, str | None] = {"type": "image", "text": None}


def _prompt_turns(item: ExportItem, question: str, images: int) -> list[dict[str, Any]]:
    """The whole prompt: the earlier turns, then the final user turn with the images the
    earlier turns did not take, in the order the `images` column holds them."""
    return [
        {
            "role": turn["role"],
            "content": [
                _IMAGE_PART if part["type"] == "image" else _text(part["text"])
                for part in turn["content"]
            ],
        }
        for turn in prompt_messages(item.turns, question, images)
    ]


def _assistant(*texts: str) -> dict[str, Any]:
    return {"role": "assistant", "content": [_text(text) for text in texts]}


def _scores(scores: Scores) -> dict[str, float | None] | None:
    if not scores:
        return None
    unknown = set(scores) - set(ATTRIBUTES)
    if unknown:
        raise ValueError(f"unknown score attributes {sorted(unknown)} (expected {ATTRIBUTES})")
    return {name: float(scores[name]) if name in scores else None for name in ATTRIBUTES}


def _images(item: ExportItem, load_image: ImageLoader) -> tuple[list[dict[str, Any]], int]:
    images, size = [], 0
    for key in item.image_keys:
        data = load_image(key)
        if not isinstance(data, bytes | bytearray | memoryview) or not data:
            raise ValueError(f"image {key!r} of prompt {item.row.prompt_id} is empty")
        # path stays null: the bytes are the image, and storage keys are internal.
        images.append({"bytes": bytes(data), "path": None})
        size += len(data)
    return images, size


def _dpo_record(item: ExportItem, load_image: ImageLoader) -> tuple[dict[str, Any], int]:
    row = item.row
    if not isinstance(row, PreferenceRow):
        raise TypeError(f"a DPO export takes PreferenceRow, not {type(row).__name__}")
    images, size = _images(item, load_image)
    record = {
        "images": images,
        "prompt": _prompt_turns(item, row.question, len(images)),
        "chosen": [_assistant(row.chosen)],
        "rejected": [_assistant(row.rejected)],
        "prompt_id": row.prompt_id,
        "chosen_scores": _scores(row.chosen_scores),
        "rejected_scores": _scores(row.rejected_scores),
        "margin": float(row.margin),
        "rater": row.rater,
        "reference": item.reference or None,
    }
    return record, size + len(row.question) + len(row.chosen) + len(row.rejected)


def _sft_record(
    item: ExportItem, load_image: ImageLoader, steerlm: bool
) -> tuple[dict[str, Any], int]:
    row = item.row
    if not isinstance(row, SftRow):
        raise TypeError(f"an SFT export takes SftRow, not {type(row).__name__}")
    images, size = _images(item, load_image)
    answer = (f"{row.label}\n", row.response) if steerlm and row.label else (row.response,)
    record = {
        "images": images,
        "messages": [*_prompt_turns(item, row.question, len(images)), _assistant(*answer)],
        "prompt_id": row.prompt_id,
        "completion_id": row.completion_id,
        "scores": _scores(row.scores),
        "rater": row.rater,
        "label": row.label,
    }
    return record, size + len(row.question) + len(row.response)


KTO_LABELS = {"desirable": True, "undesirable": False}


def _kto_record(item: ExportItem, load_image: ImageLoader) -> tuple[dict[str, Any], int]:
    row = item.row
    if not isinstance(row, SftRow) or row.label not in KTO_LABELS:
        raise ValueError(
            f"a KTO export takes SftRows labelled desirable or undesirable, not {row!r:.80}"
        )
    images, size = _images(item, load_image)
    record = {
        "images": images,
        "prompt": _prompt_turns(item, row.question, len(images)),
        "completion": [_assistant(row.response)],
        "label": KTO_LABELS[row.label],
        "prompt_id": row.prompt_id,
        "completion_id": row.completion_id,
        "scores": _scores(row.scores),
        "rater": row.rater,
    }
    return record, size + len(row.question) + len(row.response)


# ---------------------------------------------------------------------------------------
# Writing


def _write(
    path: str | os.PathLike[str],
    schema: pa.Schema,
    records: Iterable[tuple[dict[str, Any], int]],
    row_group_size: int,
    max_group_bytes: int,
) -> WriteStats:
    if row_group_size < 1:
        raise ValueError("row_group_size must be at least 1")
    names = schema.names
    image_leaves = {"images.list.element.bytes", "images.list.element.path"}
    rows = groups = 0
    with atomic_output(path) as tmp:
        writer = pq.ParquetWriter(
            tmp,
            schema,
            # As datasets.to_parquet: image bytes are already compressed, so PLAIN and
            # uncompressed; text and ids snappy with dictionaries.
            compression={
                leaf: "none" if leaf in image_leaves else "snappy" for leaf in _leaves(schema)
            },
            use_dictionary=[leaf for leaf in _leaves(schema) if leaf not in image_leaves],
            column_encoding=dict.fromkeys(image_leaves, "PLAIN"),
            # min/max of image bytes would be noise in the footer.
            write_statistics=[leaf for leaf in _leaves(schema) if leaf not in image_leaves],
        )
        try:
            columns: dict[str, list[Any]] = {name: [] for name in names}
            buffered = pending = 0

            def flush() -> None:
                nonlocal buffered, pending, groups
                table = pa.Table.from_pydict(columns, schema=schema)
                writer.write_table(table, row_group_size=pending)
                groups += 1
                for values in columns.values():
                    values.clear()
                buffered = pending = 0

            for record, size in records:
                for name in names:
                    columns[name].append(record[name])
                pending += 1
                rows += 1
                buffered += size
                if pending >= row_group_size or buffered >= max_group_bytes:
                    flush()
            if pending:
                flush()
        finally:
            writer.close()
    return WriteStats(rows=rows, bytes_written=os.path.getsize(path), row_groups=groups)


def _leaves(schema: pa.Schema) -> list[str]:
    """Parquet leaf column paths ("images.list.element.bytes"), which the per-column
    writer options are keyed by."""

    def walk(prefix: str, pa_type: pa.DataType) -> list[str]:
        if pa.types.is_struct(pa_type):
            return [leaf for f in pa_type for leaf in walk(f"{prefix}.{f.name}", f.type)]
        if pa.types.is_list(pa_type):
            return walk(f"{prefix}.list.element", pa_type.value_type)
        return [prefix]

    return [leaf for field in schema for leaf in walk(field.name, field.type)]


_DEFAULT_GROUP_BYTES = 64 * 1024 * 1024


def write_dpo_parquet(
    path: str | os.PathLike[str],
    items: Iterable[ExportItem],
    load_image: ImageLoader,
    *,
    row_group_size: int = 256,
    max_group_bytes: int = _DEFAULT_GROUP_BYTES,
) -> WriteStats:
    """Write DPO pairs (`ExportItem`s of `PreferenceRow`) to `path`, streaming.

    Memory holds one row group: at most `row_group_size` rows and, for large images, about
    `max_group_bytes` of them (this also keeps a group's binary column under Arrow's 2 GiB
    offset limit).
    """
    records = (_dpo_record(item, load_image) for item in items)
    return _write(path, DPO_SCHEMA, records, row_group_size, max_group_bytes)


def write_sft_parquet(
    path: str | os.PathLike[str],
    items: Iterable[ExportItem],
    load_image: ImageLoader,
    *,
    steerlm: bool = False,
    row_group_size: int = 256,
    max_group_bytes: int = _DEFAULT_GROUP_BYTES,
) -> WriteStats:
    """Write SFT examples (`ExportItem`s of `SftRow`) to `path`, streaming.

    With `steerlm=True` each row's label opens the assistant turn as its own text part
    (see the module docstring); the `label` column carries it either way.
    """
    records = (_sft_record(item, load_image, steerlm) for item in items)
    return _write(path, SFT_SCHEMA, records, row_group_size, max_group_bytes)


def write_kto_parquet(
    path: str | os.PathLike[str],
    items: Iterable[ExportItem],
    load_image: ImageLoader,
    *,
    row_group_size: int = 256,
    max_group_bytes: int = _DEFAULT_GROUP_BYTES,
) -> WriteStats:
    """Write KTO's unpaired examples (`ExportItem`s of `SftRow` whose `label` is desirable
    or undesirable) to `path`, streaming, in TRL's `prompt` / `completion` / `label` layout."""
    records = (_kto_record(item, load_image) for item in items)
    return _write(path, KTO_SCHEMA, records, row_group_size, max_group_bytes)
