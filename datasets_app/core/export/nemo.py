"""SteerLM rows as the JSONL that NeMo-Aligner's SteerLM SFT reads, images beside it.

Pure core (no Django). One JSON object per line:

    {"system": "", "conversations": [
        {"from": "User", "value": question, "label": null},
        {"from": "Assistant", "value": response, "label": "helpfulness:4,correctness:3,..."}],
     "mask": "User", "type": "VALUE_TO_TEXT", "image": "images/<key>.<ext>"}

`mask: "User"` masks the user turns from the loss; `type: VALUE_TO_TEXT` tells NeMo the
label conditions the response. NeMo's own layout has no image field: `image` (a path
relative to the JSONL's folder, null for text-only prompts) is ours, for multimodal
trainers built on it; a prompt of several images also gets `images`, every path in order.
A conversation's earlier turns come first in `conversations` (label null), with `<image>`
where each of their images sits. The label is the row's `label` (null when the row has
none).

The JSONL is written atomically like the parquet files. Images are written one by one
(each atomically) into `images/` next to it; an image already there with the same name is
kept, and on failure the images this call created are removed again, so a failed export
leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets_app.core.curation.types import SftRow
from datasets_app.core.export.parquet import ExportItem, ImageLoader, atomic_output

__all__ = ["IMAGE_DIR", "NemoStats", "image_name", "write_nemo_jsonl"]

IMAGE_DIR = "images"
_SAFE = re.compile(r"[^A-Za-z0-9_-]")
# Magic numbers -> extension; the storage key's own extension is only a fallback, since
# keys may be content hashes without one.
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpg"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
)


@dataclass(frozen=True)
class NemoStats:
    rows: int
    images: int  # image files this call wrote (already present ones not counted)
    bytes_written: int  # of the JSONL file


def _extension(data: bytes, key: str) -> str:
    for magic, ext in _MAGIC:
        if data.startswith(magic):
            return ext
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    suffix = Path(key).suffix.lstrip(".").lower()
    return suffix if suffix and not _SAFE.search(suffix) else "bin"


def image_name(key: str, data: bytes) -> str:
    """`<key>.<ext>` with the key made filename-safe; a key that needed changes gets a short
    hash of the original appended, so two keys never share a file."""
    stem = Path(key).stem if Path(key).suffix else key
    safe = _SAFE.sub("_", stem)[:80]
    if safe != stem:
        safe = f"{safe}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    return f"{safe}.{_extension(data, key)}"


def _label(row: SftRow) -> str | None:
    return row.label or None


_NEMO_ROLES = {"user": "User", "assistant": "Assistant", "system": "System"}


def _earlier_turns(item: ExportItem) -> list[dict[str, str | None]]:
    """A conversation's earlier turns, NeMo-style, with LLaVA's `<image>` marker where each
    of its images sits (the final user turn's images are the rest of `images`)."""
    turns = []
    for turn in item.turns:
        value = "".join(
            "<image>\n" if part["type"] == "image" else part.get("text") or ""
            for part in turn["content"]
        )
        turns.append({"from": _NEMO_ROLES[turn["role"]], "value": value, "label": None})
    return turns


def write_nemo_jsonl(
    path: str | os.PathLike[str], items: Iterable[ExportItem], load_image: ImageLoader
) -> NemoStats:
    """Write SteerLM rows (`ExportItem`s of `SftRow`) as NeMo-Aligner JSONL at `path`, and
    their images under `images/` in the same folder. Streams: one row in memory at a time."""
    target = Path(path)
    image_dir = target.parent / IMAGE_DIR
    created: list[Path] = []
    rows = 0
    try:
        with atomic_output(target) as tmp, open(tmp, "w", encoding="utf-8") as out:
            for item in items:
                row = item.row
                if not isinstance(row, SftRow):
                    raise TypeError(f"a SteerLM export takes SftRow, not {type(row).__name__}")
                relatives = []
                for key in item.image_keys:
                    data = load_image(key)
                    if not data:
                        raise ValueError(f"image {key!r} is empty")
                    name = image_name(key, data)
                    relatives.append(f"{IMAGE_DIR}/{name}")
                    destination = image_dir / name
                    if not destination.exists():
                        image_dir.mkdir(exist_ok=True)
                        with atomic_output(destination) as image_tmp:
                            image_tmp.write_bytes(data)
                        created.append(destination)
                record: dict[str, Any] = {
                    "system": "",
                    "conversations": [
                        *_earlier_turns(item),
                        {"from": "User", "value": row.question, "label": None},
                        {"from": "Assistant", "value": row.response, "label": _label(row)},
                    ],
                    "mask": "User",
                    "type": "VALUE_TO_TEXT",
                    "image": relatives[0] if relatives else None,
                }
                if len(relatives) > 1:
                    record["images"] = relatives
                # ensure_ascii=False: UTF-8 text stays readable; json escapes newlines, so
                # one record is always one line.
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
                rows += 1
            out.flush()
    except BaseException:
        for image in created:
            with contextlib.suppress(FileNotFoundError):
                image.unlink()
        raise
    return NemoStats(rows=rows, images=len(created), bytes_written=target.stat().st_size)
