"""Conversations of several turns: one layout for every prompt, and the readers of the two
layouts files come in.

A prompt is a conversation: earlier `turns` (user and assistant, optionally a leading
system turn), then the user turn the completions answer, whose text is the prompt's
`question`. Turns use TRL's conversational layout, content always a list of parts:
{"type": "text", "text": ...} or {"type": "image"}. Images are not inside the turns: the
prompt holds them in order, and the n-th image part is the prompt's n-th image (TRL's
`prepare_multimodal_messages` fills parts the same way). The images left over after the
earlier turns belong to the final user turn and stand before its text, as in LLaVA's
single-turn layout; a single-turn prompt is the special case of no earlier turns.

Readers:
- TRL conversational (`prompt` or `messages` column, a list of {role, content}); content a
  string or a list of parts; image parts may be {"type": "image"} or carry the image.
- LLaVA-Instruct (`conversations`, a list of {from: human|gpt|system, value}) with
  `<image>` markers where the images go.
When a conversation names no image at all but the row has images, they open the first user
turn (what TRL and LLaVA do with such rows).

Pure core: no Django.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "IMAGE_MARKER",
    "Conversation",
    "ConversationInvalid",
    "from_llava",
    "from_messages",
    "image_count",
    "prompt_messages",
    "turn_text",
]

Turn = dict[str, Any]
IMAGE_MARKER = "<image>"
ROLES = ("system", "user", "assistant")
_LLAVA_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}
_LLAVA_ROLES["system"] = "system"
MAX_TURNS = 64
MAX_TEXT_CHARS = 20_000


class ConversationInvalid(ValueError):
    """The conversation cannot be read; `field` names the column for the row's error."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Conversation:
    """A conversation read from a file, split where the prompt ends."""

    turns: list[Turn]  # the earlier turns, canonical
    question: str  # the final user turn's text
    final_images: int  # image parts in the final user turn
    answer: str = ""  # a trailing assistant turn (the file's reference answer), if any

    @property
    def images(self) -> int:
        return image_count(self.turns) + self.final_images


def _image() -> dict[str, Any]:
    return {"type": "image"}


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def _checked_text(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise ConversationInvalid(f"text must be a string, not {type(value).__name__}", field)
    if "\x00" in value:
        raise ConversationInvalid("text contains a NUL character", field)
    if len(value) > MAX_TEXT_CHARS:
        raise ConversationInvalid(f"a turn is longer than {MAX_TEXT_CHARS:,} characters", field)
    return value


def _parts(content: Any, field: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [_text(_checked_text(content, field))] if content else []
    if not isinstance(content, list | tuple):
        raise ConversationInvalid(
            f"content must be text or a list of parts, not {type(content).__name__}", field
        )
    parts = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "image":
            parts.append(_image())
        elif kind == "text":
            text = part.get("text")
            parts.append(_text(_checked_text("" if text is None else text, field)))
        else:
            raise ConversationInvalid(
                f"a content part must be of type text or image, not {part!r:.80}",
                field,
            )
    return parts


def turn_text(turn: Turn) -> str:
    """The text of a turn, its text parts joined as a chat template joins them."""
    return "".join(p.get("text") or "" for p in turn["content"] if p.get("type") == "text")


def image_count(turns: Sequence[Turn]) -> int:
    return sum(1 for turn in turns for part in turn["content"] if part.get("type") == "image")


def _split(messages: list[Turn], images: int, field: str) -> Conversation:
    if not messages:
        raise ConversationInvalid("the conversation has no turns", field)
    if len(messages) > MAX_TURNS:
        raise ConversationInvalid(f"more than {MAX_TURNS} turns", field)
    for n, message in enumerate(messages):
        if message["role"] == "system" and n != 0:
            raise ConversationInvalid("a system turn may only open the conversation", field)
    answer = ""
    if messages[-1]["role"] == "assistant":
        # A trailing answer (an SFT row, a LLaVA-Instruct record) is the reference answer.
        last = messages.pop()
        if image_count([last]):
            raise ConversationInvalid("the final assistant turn holds an image", field)
        answer = turn_text(last).strip()
    if not messages or messages[-1]["role"] != "user":
        raise ConversationInvalid(
            "the conversation must end with the user turn to answer "
            "(optionally followed by its reference answer)",
            field,
        )
    named = image_count(messages)
    if named == 0 and images:
        first = next(m for m in messages if m["role"] == "user")
        first["content"] = [_image() for _ in range(images)] + first["content"]
    elif named != images:
        raise ConversationInvalid(
            f"the conversation has {named} image places but the row has {images} images",
            field,
        )
    *turns, final = messages
    question = turn_text(final).strip()
    if not question:
        raise ConversationInvalid("the final user turn has no text", field)
    return Conversation(
        turns=turns, question=question, final_images=image_count([final]), answer=answer
    )


def from_messages(messages: Any, images: int, *, field: str = "prompt") -> Conversation:
    """Read TRL's conversational layout (a list of {role, content})."""
    if not isinstance(messages, list | tuple):
        raise ConversationInvalid(
            f"{field} must be a list of {{role, content}} turns, not {type(messages).__name__}",
            field,
        )
    canonical = []
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise ConversationInvalid(
                f"each turn needs a role of {', '.join(ROLES)}; got {message!r:.80}", field
            )
        canonical.append(
            {"role": message["role"], "content": _parts(message.get("content"), field)}
        )
    return _split(canonical, images, field)


def from_llava(conversations: Any, images: int, *, field: str = "conversations") -> Conversation:
    """Read LLaVA-Instruct's layout: [{from: human|gpt, value}] with <image> markers."""
    if not isinstance(conversations, list | tuple):
        raise ConversationInvalid(
            f"{field} must be a list of {{from, value}} turns, not {type(conversations).__name__}",
            field,
        )
    canonical = []
    for turn in conversations:
        role = (
            _LLAVA_ROLES.get(str(turn.get("from", "")).lower()) if isinstance(turn, dict) else None
        )
        if role is None:
            raise ConversationInvalid(
                f"each turn needs 'from' human or gpt (or system); got {turn!r:.80}", field
            )
        value = _checked_text(turn.get("value") or "", field)
        content: list[dict[str, Any]] = []
        for n, piece in enumerate(value.split(IMAGE_MARKER)):
            if n:
                content.append(_image())
            piece = piece.strip("\n") if n or IMAGE_MARKER in value else piece
            if piece:
                content.append(_text(piece))
        canonical.append({"role": role, "content": content})
    return _split(canonical, images, field)


def prompt_messages(turns: Sequence[Turn], question: str, images: int) -> list[Turn]:
    """The whole prompt as TRL's conversational messages: the earlier turns, then the final
    user turn with the images the earlier turns did not take, before its text."""
    final_images = images - image_count(turns)
    if final_images < 0:
        raise ValueError(f"the earlier turns name {image_count(turns)} images of {images}")
    final = {"role": "user", "content": [*(_image() for _ in range(final_images)), _text(question)]}
    return [*(dict(t, content=list(t["content"])) for t in turns), final]
