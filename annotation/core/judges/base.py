"""What every judge takes and returns, and how its answer is validated.

A judge sees one item (an image, a question and K completions) and returns, for each
completion, the five HelpSteer scores (integers 0-4) with reasoning written first. The
answer is JSON against `ratings_schema(k)`, and that schema states every rule
`parse_ratings` checks: one required object per completion (`response_1` ... `response_K`),
each with its reasoning text and five scores from 0-4. Anything else raises
`InvalidJudgeOutput`, and a partial rating is never returned. Reasoning may be empty: no
keyword that both OpenAI's strict mode and Gemini accept can require non-empty text, and a
rule the schema cannot state would make a schema-conforming answer invalid.
"""

from __future__ import annotations

import email.utils
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

ATTRIBUTES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
SCORE_MIN, SCORE_MAX = 0, 4
SCORES = tuple(range(SCORE_MIN, SCORE_MAX + 1))


class JudgeError(Exception):
    """Base of what a judge call can raise."""


class TransientJudgeError(JudgeError):
    """Worth retrying: 429, 5xx, a timeout or a dropped connection.

    `retry_after` is the server's Retry-After in seconds, when it sent one.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class InvalidJudgeOutput(JudgeError):
    """The judge answered, but not with a complete, valid rating; `raw` keeps the answer."""

    def __init__(self, message: str, *, raw: str = "", usage: Usage | None = None) -> None:
        super().__init__(message)
        self.raw = raw
        self.usage = usage or Usage()


class FatalJudgeError(JudgeError):
    """Retrying will not help: a bad API key, an unknown model, a refused request."""


@dataclass(frozen=True)
class JudgeItem:
    key: str  # stable id (e.g. "prompt:12/completions:3,4,5,6")
    question: str
    completions: tuple[str, ...]
    image: bytes | None = None
    image_mime: str = "image/png"
    choices: tuple[str, ...] = ()
    answer_index: int | None = None
    reference_answer: str = ""
    hint: str = ""
    # Facts the rule-based oracle may use (the shapes scene); never sent to a model.
    facts: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    # A conversation's later images ((bytes, mime), in order) and its earlier turns
    # (datasets_app/core/conversation.py layout); the question is the final user turn.
    more_images: tuple[tuple[bytes, str], ...] = ()
    turns: tuple[dict[str, Any], ...] = ()

    @property
    def images(self) -> list[tuple[bytes, str]]:
        """Every image (bytes, mime) in conversation order."""
        if self.image is None:
            return []
        return [(self.image, self.image_mime), *self.more_images]


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens
        )


@dataclass(frozen=True)
class CompletionRating:
    helpfulness: int
    correctness: int
    coherence: int
    complexity: int
    verbosity: int
    reasoning: str = ""

    @property
    def scores(self) -> dict[str, int]:
        return {a: getattr(self, a) for a in ATTRIBUTES}


@dataclass(frozen=True)
class JudgeResult:
    ratings: tuple[CompletionRating, ...]  # one per completion, in the item's order
    reasoning: str
    raw: str
    usage: Usage = Usage()


@dataclass(frozen=True)
class TextResult:
    """A free-text answer (the judge answering the question itself, or rewriting)."""

    text: str
    usage: Usage = Usage()

    @property
    def raw(self) -> str:
        return self.text


def require_text(text: str | None, usage: Usage, what: str) -> TextResult:
    if not text or not text.strip():
        raise InvalidJudgeOutput(f"{what}: the answer is empty", raw=text or "", usage=usage)
    return TextResult(text.strip(), usage)


class Judge(Protocol):
    """One call rates all K completions of an item. Thread-safe: runners call it from
    several threads at once."""

    provider: str
    model: str

    def rate(self, item: JudgeItem) -> JudgeResult: ...

    def complete(
        self, prompt: str, image: bytes | None = None, image_mime: str = "image/png"
    ) -> TextResult:
        """Free text for a prompt (and an image): the judge's own answer, or a rewrite."""
        ...


def response_key(n: int) -> str:
    """The property that holds the rating of the n-th (1-based) completion."""
    return f"response_{n}"


def ratings_schema(k: int) -> dict[str, Any]:
    """JSON Schema of a judge's answer: overall reasoning first, then one required property
    per completion, its own reasoning before its five scores.

    Numbered properties rather than an array, so that "exactly K, each once" is in the
    schema itself (strict mode may refuse minItems/maxItems), and an `enum` for the 0-4
    scale (integer ranges are refused by some strict-mode servers). Only keywords that
    OpenAI's strict mode and Gemini's `response_json_schema` both accept, every property
    required and no other allowed, so the same schema goes to both."""
    if k < 1:
        raise ValueError("a judge call rates at least one completion")
    properties: dict[str, Any] = {"reasoning": {"type": "string"}}
    for n in range(1, k + 1):
        properties[response_key(n)] = {
            "type": "object",
            "properties": {
                "reasoning": {"type": "string"},
                **{a: {"type": "integer", "enum": list(SCORES)} for a in ATTRIBUTES},
            },
            "required": ["reasoning", *ATTRIBUTES],
            "additionalProperties": False,
        }
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


def extract_json(text: str) -> Any:
    """The JSON object in a model's answer: the whole text, a fenced block, or the first
    balanced {...} (local models wrap JSON in prose)."""
    text = text.strip()
    candidates = [text, *_FENCE.findall(text)]
    start = text.find("{")
    if start >= 0:
        depth, in_string, escaped = 0, False, False
        for i, ch in enumerate(text[start:], start):
            if in_string:
                escaped = not escaped and ch == "\\"
                if ch == '"' and not escaped:
                    in_string = False
                if ch != "\\":
                    escaped = False
                continue
            if ch == '"':
                in_string = True
            elif ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    candidates.append(text[start : i + 1])
                    break
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except (json.JSONDecodeError, ValueError):
            continue
    raise InvalidJudgeOutput("the answer is not JSON", raw=text)


def _score(value: Any, attribute: str, n: int, raw: str) -> int:
    # bool is an int in Python; "4" and 4.0 are not scores either: the schema says integer.
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidJudgeOutput(f"response {n}: {attribute} is {value!r}, not an integer", raw=raw)
    if not SCORE_MIN <= value <= SCORE_MAX:
        raise InvalidJudgeOutput(f"response {n}: {attribute} is {value}, outside 0-4", raw=raw)
    return value


def parse_ratings(raw: str, k: int, *, usage: Usage | None = None) -> JudgeResult:
    """Validate a judge's answer for K completions, or raise InvalidJudgeOutput."""
    try:
        data = extract_json(raw)
    except InvalidJudgeOutput as exc:
        raise InvalidJudgeOutput(str(exc), raw=raw, usage=usage) from None
    try:
        return _validated(data, raw, k, usage or Usage())
    except InvalidJudgeOutput as exc:
        raise InvalidJudgeOutput(str(exc), raw=raw, usage=usage) from None


_RESPONSE_KEY = re.compile(r"^response_(\d+)$")


def _validated(data: Any, raw: str, k: int, usage: Usage) -> JudgeResult:
    if not isinstance(data, dict):
        raise InvalidJudgeOutput("the answer is not a JSON object", raw=raw)
    extra = sorted(
        int(m.group(1))
        for m in map(_RESPONSE_KEY.match, data)
        if m and not 1 <= int(m.group(1)) <= k
    )
    if extra:
        raise InvalidJudgeOutput(f"the answer rates response {extra[0]} of {k}", raw=raw)
    missing = [n for n in range(1, k + 1) if response_key(n) not in data]
    if missing:
        names = ", ".join(map(str, missing))
        raise InvalidJudgeOutput(f"responses {names} of {k} are not rated", raw=raw)
    ratings = []
    for n in range(1, k + 1):
        entry = data[response_key(n)]
        if not isinstance(entry, dict):
            raise InvalidJudgeOutput(f"response {n}: the rating is not an object", raw=raw)
        reasoning = entry.get("reasoning", "")
        if not isinstance(reasoning, str):
            raise InvalidJudgeOutput(f"response {n}: reasoning is not text", raw=raw)
        scores = {a: _score(entry.get(a), a, n, raw) for a in ATTRIBUTES}
        ratings.append(CompletionRating(**scores, reasoning=reasoning.strip()))
    overall = data.get("reasoning", "")
    if not isinstance(overall, str):
        raise InvalidJudgeOutput("the overall reasoning is not text", raw=raw)
    return JudgeResult(ratings=tuple(ratings), reasoning=overall.strip(), raw=raw, usage=usage)


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Seconds a server asked us to wait: `retry-after-ms` (OpenAI's exact value) first,
    then `retry-after` as delta-seconds (fractions tolerated) or an HTTP date."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            value = float(millis) / 1000
        except ValueError:
            value = float("nan")
        if value == value:  # NaN is no answer
            return max(0.0, value)
    header = headers.get("retry-after")
    if header is None:
        return None
    try:
        seconds = float(header)
    except ValueError:
        parsed = email.utils.parsedate_tz(header)
        if parsed is None:
            return None
        seconds = email.utils.mktime_tz(parsed) - time.time()
    return max(0.0, seconds) if seconds == seconds else None
