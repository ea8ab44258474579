"""A judge backed by an OpenAI-compatible chat completions API (OpenAI itself, vLLM, ...)
through the `openai` SDK (pure core: no Django).

The SDK's retries are off (`max_retries=0`): the runner owns rate limiting and retries.
"""

from __future__ import annotations

import base64
from typing import Any

import openai
from openai import OpenAI

from annotation.core.judges.base import (
    FatalJudgeError,
    InvalidJudgeOutput,
    JudgeItem,
    JudgeResult,
    TextResult,
    TransientJudgeError,
    Usage,
    parse_ratings,
    ratings_schema,
    require_text,
    retry_after_seconds,
)
from annotation.core.judges.pairwise import PairVerdict, pairwise_schema, parse_verdict
from annotation.core.judges.prompt import render_judge_prompt, render_pairwise_prompt

SCHEMA_NAME = "helpsteer_ratings"
PAIRWISE_SCHEMA_NAME = "pairwise_verdict"
# 408 (timeout), 409 (lock timeout) and 429 are the 4xx answers a later request can get past.
_TRANSIENT_4XX = frozenset({408, 409, 429})


class OpenAIJudge:
    """Rates all K completions of an item in one chat completion with a strict JSON schema.

    Thread-safe: one SDK client (one httpx connection pool, documented as shareable between
    threads) serves all threads."""

    provider = "openai"

    def __init__(
        self,
        *,
        model: str,
        api_key: str,
        base_url: str | None = None,
        temperature: float = 0.0,
        prompt_version: str = "v2",
        timeout_s: float = 120.0,
        max_output_tokens: int = 4096,
    ) -> None:
        if not api_key:
            # Local servers (vLLM) take any key, but the SDK refuses none at all.
            raise FatalJudgeError("the OpenAI judge needs an API key (any text for vLLM)")
        self.model = model
        self.temperature = temperature
        self.prompt_version = prompt_version
        self.timeout_s = timeout_s
        self.max_output_tokens = max_output_tokens
        self._api_key = api_key
        # `timeout` is in seconds and applies to connect, read, write and pool each.
        self._client = OpenAI(api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout_s)
        # `max_tokens` is what every OpenAI-compatible server knows; OpenAI's reasoning
        # models refuse it and want `max_completion_tokens`. Switched once, on that refusal
        # (threads racing here all write the same value).
        self._length_param = "max_tokens"

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIJudge(model={self.model!r})"

    def close(self) -> None:
        """Close the connection pool (the judge is unusable afterwards)."""
        self._client.close()

    def _messages(self, text: str, images: list[tuple[bytes, str]]) -> list[dict[str, Any]]:
        content: list[dict[str, Any]] = [{"type": "text", "text": text}]
        for data, mime in images:  # in conversation order; the prompt numbers them
            encoded = base64.b64encode(data).decode("ascii")
            content.append(
                {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{encoded}"}}
            )
        return [{"role": "user", "content": content}]

    def complete(
        self, prompt: str, image: bytes | None = None, image_mime: str = "image/png"
    ) -> TextResult:
        request = {
            "model": self.model,
            "temperature": self.temperature,
            "messages": self._messages(prompt, [(image, image_mime)] if image is not None else []),
        }
        text, usage, _ = self._text(self._create(request))
        return require_text(text, usage, f"OpenAI {self.model}")

    def rate(self, item: JudgeItem) -> JudgeResult:
        response = self._create(self.rating_request(item))
        return self._result(response, len(item.completions))

    def compare(self, item: JudgeItem) -> PairVerdict:
        """Which of two completions is better (pairwise mode), under the pairwise schema."""
        request = {
            "model": self.model,
            "temperature": self.temperature,
            "messages": self._messages(render_pairwise_prompt(item), item.images),
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": PAIRWISE_SCHEMA_NAME,
                    "schema": pairwise_schema(),
                    "strict": True,
                },
            },
        }
        text, usage, _ = self._text(self._create(request))
        return parse_verdict(text, usage=usage)

    def rating_request(self, item: JudgeItem) -> dict[str, Any]:
        """The chat completion request that rates `item` (without its length limit)."""
        return {
            "model": self.model,
            "temperature": self.temperature,
            "messages": self._messages(render_judge_prompt(item, self.prompt_version), item.images),
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": SCHEMA_NAME,
                    # Already in strict mode's subset (see ratings_schema): sent as it is.
                    "schema": ratings_schema(len(item.completions)),
                    "strict": True,
                },
            },
        }

    def batch_body(self, item: JudgeItem) -> dict[str, Any]:
        """The body of `item`'s line in a Batch input file: the online request, limit included."""
        return {**self.rating_request(item), self._length_param: self.max_output_tokens}

    def result_from_body(self, body: dict[str, Any], k: int) -> JudgeResult:
        """A Batch output line's chat completion, validated as an online answer is."""
        from openai.types.chat import ChatCompletion

        try:
            response = ChatCompletion.model_validate(body)
        except ValueError as exc:
            raise InvalidJudgeOutput(
                f"OpenAI {self.model}: a batch line that is not a chat completion: {exc}"[:300],
                raw=str(body)[:2000],
            ) from None
        return self._result(response, k)

    @property
    def client(self) -> OpenAI:
        """The SDK client (the batch runner uploads files and polls batches through it)."""
        return self._client

    def _create(self, request: dict[str, Any]) -> Any:
        param = self._length_param
        arguments: dict[str, Any] = {**request, param: self.max_output_tokens}
        try:
            return self._client.chat.completions.create(**arguments)
        except openai.BadRequestError as exc:
            if param == "max_tokens" and _wants_max_completion_tokens(exc):
                self._length_param = "max_completion_tokens"
                return self._create(request)
            raise self._error(exc) from None
        except openai.OpenAIError as exc:
            raise self._error(exc) from None

    # -- answers -----------------------------------------------------------------------

    def _result(self, response: Any, k: int) -> JudgeResult:
        text, usage, finish_reason = self._text(response)
        try:
            return parse_ratings(text, k, usage=usage)
        except InvalidJudgeOutput as exc:
            if finish_reason == "length":
                raise InvalidJudgeOutput(
                    f"{exc} (the answer was cut at {self.max_output_tokens} tokens)",
                    raw=exc.raw,
                    usage=exc.usage,
                ) from None
            raise

    def _text(self, response: Any) -> tuple[str, Usage, str | None]:
        """The answer's text, usage and finish reason; a refusal or nothing is invalid."""
        usage = _usage(getattr(response, "usage", None))
        choices = getattr(response, "choices", None) or []
        if not choices:
            raise InvalidJudgeOutput(
                f"OpenAI {self.model}: the answer has no choices",
                raw=_response_json(response),
                usage=usage,
            )
        choice = choices[0]
        message = choice.message
        refusal = getattr(message, "refusal", None)
        if refusal:
            raise InvalidJudgeOutput(
                f"OpenAI {self.model}: the model refused: {refusal[:200]}",
                raw=refusal,
                usage=usage,
            )
        text = message.content
        if not text:
            raise InvalidJudgeOutput(
                f"OpenAI {self.model}: the answer has no content "
                f"(finish reason {choice.finish_reason})",
                raw=_response_json(response),
                usage=usage,
            )
        if choice.finish_reason == "content_filter":
            raise InvalidJudgeOutput(
                f"OpenAI {self.model}: the answer was filtered", raw=text, usage=usage
            )
        return text, usage, choice.finish_reason

    # -- errors ------------------------------------------------------------------------

    def _error(self, exc: openai.OpenAIError) -> Exception:
        name = type(exc).__name__
        if isinstance(exc, openai.APIConnectionError):  # APITimeoutError included
            return TransientJudgeError(f"OpenAI {self.model}: {name}: {self._scrub(str(exc))}")
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            message = f"OpenAI {self.model}: HTTP {status}: {self._detail(exc)}"[:500]
            if status >= 500 or status in _TRANSIENT_4XX:
                return TransientJudgeError(
                    message, retry_after=retry_after_seconds(exc.response.headers)
                )
            # 400, 401, 403, 404, 422: the same request cannot succeed later.
            return FatalJudgeError(message)
        if isinstance(exc, openai.APIResponseValidationError):
            # The server answered 2xx with a body that is not a chat completion: a gateway.
            return TransientJudgeError(f"OpenAI {self.model}: unreadable answer ({name})")
        return FatalJudgeError(f"OpenAI {self.model}: {name}: {self._scrub(str(exc))}"[:500])

    def _detail(self, exc: openai.APIStatusError) -> str:
        body = exc.body
        error = body.get("error", body) if isinstance(body, dict) else None
        if isinstance(error, dict) and error.get("message"):
            code = error.get("code") or error.get("type") or ""
            text = f"{error['message']} ({code})" if code else str(error["message"])
        else:
            text = str(exc.message)
        return self._scrub(text)

    def _scrub(self, text: str) -> str:
        # OpenAI's 401 echoes part of the key and a proxy may echo all of it: never repeat it.
        return text.replace(self._api_key, "***") if self._api_key else text


def _wants_max_completion_tokens(exc: openai.BadRequestError) -> bool:
    text = str(exc)
    return "max_tokens" in text and "max_completion_tokens" in text


def _usage(usage: Any) -> Usage:
    if usage is None:
        return Usage()
    return Usage(
        input_tokens=getattr(usage, "prompt_tokens", 0) or 0,
        output_tokens=getattr(usage, "completion_tokens", 0) or 0,
    )


def _response_json(response: Any) -> str:
    """The whole answer as JSON, kept as `raw` when there is no text to keep."""
    try:
        return str(response.model_dump_json(exclude_none=True))
    except (AttributeError, TypeError, ValueError):
        return repr(response)
