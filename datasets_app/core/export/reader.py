"""Read DPO and SFT parquet files back into plain records, one row group at a time.

Pure core (no Django). Accepts our own export layout and the public TRL layouts:

- images: `images` (a list, 1..N, in the order the prompt's image parts appear) or
  `image` (one image); an image is a {bytes, path} struct as `datasets` writes it, or plain
  binary. No image column, or an empty list, means a text-only row.
- DPO text: `prompt`, `chosen`, `rejected`, each either a plain string or a conversation
  (a list of {role, content}, content a string or a list of {type, text} parts). A
  conversational prompt is read as core/conversation.py reads one: its earlier turns, and
  the question, the text of its final user turn; an answer is the text of the last
  assistant turn (TRL's "implicit prompt" files repeat the prompt inside chosen/rejected).
  Plain-string prompts may carry "<image>" placeholders; they are removed, since the chat
  template places the image again.
- SFT: `messages` (a conversation); the prompt is every turn before the last assistant
  turn (read as above), the response that assistant turn. When a `label` column is present and
  the assistant turn opens with a text part equal to label + "\\n" (our SteerLM layout),
  that part is split off as the label.

Every other column (`prompt_id`, scores, `rater`, ...) is passed through in `extra`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from datasets_app.core.conversation import ConversationInvalid, from_messages

__all__ = ["ImportedExample", "ImportedPair", "read_dpo_parquet", "read_sft_parquet"]

# Rows per Arrow batch: small, so that memory holds a few dozen images, not a row group's
# worth of Python objects.
_BATCH_ROWS = 64
_IMAGE_TOKEN = re.compile(r"[ \t]*<image>[ \t]*\n?")


@dataclass(frozen=True)
class ImportedPair:
    images: tuple[bytes, ...]
    question: str
    chosen: str
    rejected: str
    extra: dict[str, Any] = field(default_factory=dict)
    turns: tuple[dict[str, Any], ...] = ()  # the conversation before the final user turn


@dataclass(frozen=True)
class ImportedExample:
    images: tuple[bytes, ...]
    question: str
    response: str
    label: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    turns: tuple[dict[str, Any], ...] = ()


def read_dpo_parquet(path: str | os.PathLike[str]) -> Iterator[ImportedPair]:
    """Yield the pairs of a DPO parquet file; ValueError if its layout is not supported."""
    source = _open(path, required=("prompt", "chosen", "rejected"), kind="DPO")
    consumed = {"image", "images", "prompt", "chosen", "rejected"}
    for index, record in _records(source):
        try:
            images = _images(record)
            turns, question = _prompt(record["prompt"], len(images))
            yield ImportedPair(
                images=images,
                question=question,
                chosen=_answer(record["chosen"]),
                rejected=_answer(record["rejected"]),
                extra={k: v for k, v in record.items() if k not in consumed},
                turns=turns,
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"{path}: row {index}: {exc}") from exc


def read_sft_parquet(path: str | os.PathLike[str]) -> Iterator[ImportedExample]:
    """Yield the examples of an SFT parquet file; ValueError if its layout is not supported."""
    source = _open(path, required=("messages",), kind="SFT")
    consumed = {"image", "images", "messages", "label"}
    for index, record in _records(source):
        try:
            images = _images(record)
            turns, question, response, label = _sft_turns(
                record["messages"], record.get("label"), len(images)
            )
            yield ImportedExample(
                images=images,
                question=question,
                response=response,
                label=label,
                extra={k: v for k, v in record.items() if k not in consumed},
                turns=turns,
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"{path}: row {index}: {exc}") from exc


# ---------------------------------------------------------------------------------------


def _open(path: str | os.PathLike[str], *, required: tuple[str, ...], kind: str) -> Any:
    try:
        source = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(f"{path} is not a readable parquet file: {exc}") from exc
    names = set(source.schema_arrow.names)
    missing = [name for name in required if name not in names]
    if missing:
        raise ValueError(
            f"{path} is not a {kind} file in a supported layout: missing column(s) "
            f"{', '.join(missing)} (found: {', '.join(sorted(names)) or 'none'})"
        )
    return source


def _records(source: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    index = 0
    # iter_batches decodes one row group at a time: memory follows the batch, not the file.
    for batch in source.iter_batches(batch_size=_BATCH_ROWS):
        for record in batch.to_pylist():
            yield index, record
            index += 1


def _image_bytes(value: Any) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, dict):
        data = value.get("bytes")
        if data is None and value.get("path"):
            raise ValueError(f"image {value['path']!r} is referenced by path, without its bytes")
        return data if data is None or isinstance(data, bytes) else bytes(data)
    raise TypeError(f"unsupported image value of type {type(value).__name__}")


def _images(record: dict[str, Any]) -> tuple[bytes, ...]:
    if "images" in record:
        values = record["images"] or []
    else:
        values = [record["image"]] if record.get("image") is not None else []
    images = tuple(_image_bytes(value) for value in values)
    if any(data is None for data in images):
        raise ValueError("an image of the row is empty")
    return images  # type: ignore[return-value]


def _prompt(prompt: Any, images: int) -> tuple[tuple[dict[str, Any], ...], str]:
    """(earlier turns, question) of a DPO prompt: a string, or a conversation."""
    if isinstance(prompt, str):
        return (), _IMAGE_TOKEN.sub("", prompt).strip()
    if not isinstance(prompt, list):
        raise TypeError(f"expected a conversation (list of messages), got {type(prompt)}")
    try:
        conversation = from_messages(prompt, images)
    except ConversationInvalid as exc:
        raise ValueError(str(exc)) from None
    return tuple(conversation.turns), conversation.question


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(
        part.get("text") or "" for part in content if part and part.get("type") == "text"
    )


def _last_turn(messages: Any, role: str) -> dict[str, Any]:
    if not isinstance(messages, list):
        raise TypeError(f"expected a conversation (list of messages), got {type(messages)}")
    for message in reversed(messages):
        if message and message.get("role") == role:
            return message
    raise ValueError(f"no {role} turn in the conversation")


def _answer(answer: Any) -> str:
    if isinstance(answer, str):
        return answer
    return _content_text(_last_turn(answer, "assistant").get("content"))


def _sft_turns(
    messages: Any, label: str | None, images: int
) -> tuple[tuple[dict[str, Any], ...], str, str, str]:
    if not isinstance(messages, list):
        raise TypeError(f"expected a conversation (list of messages), got {type(messages)}")
    last = max(
        (i for i, m in enumerate(messages) if m and m.get("role") == "assistant"), default=None
    )
    if last is None:
        raise ValueError("no assistant turn in messages")
    turns, question = _prompt(messages[:last], images)
    content = messages[last].get("content")
    if label and isinstance(content, list) and content:
        first = content[0]
        if first.get("type") == "text" and first.get("text") == f"{label}\n":
            return turns, question, _content_text(content[1:]), label
    return turns, question, _content_text(content), label or ""
