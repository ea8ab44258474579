"""A judge backed by the Gemini API through the `google-genai` SDK (pure core: no Django).

One `rate()` is exactly one HTTP request: the SDK's own retries, automatic function calling
and automatic continuation are switched off, because the runner owns rate limiting and
retries and counts every request against the provider's quota.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

from google import genai
from google.genai import errors, types

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

# Finish reasons after which the text (if any) is not a usable answer.
_REFUSED = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "LANGUAGE",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "MODEL_ARMOR",
    }
)
# 408 and 429 are the 4xx answers that a later identical request can get past.
_TRANSIENT_4XX = frozenset({408, 429})


def _transport_errors() -> tuple[type[BaseException], ...]:
    """httpx's TransportError (timeouts included) from whichever of httpx / httpx2 is
    installed: google-genai 3.x sends through httpx2, older releases through httpx."""
    classes: list[type[BaseException]] = []
    for name in ("httpx2", "httpx"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        classes.append(module.TransportError)
    return tuple(classes)


_TRANSPORT_ERRORS = _transport_errors()


def _parts(prompt: str, images: list[tuple[bytes, str]]) -> list[types.Part]:
    # The images first, in conversation order; the prompt numbers them ("image 1", ...).
    parts = [types.Part.from_bytes(data=data, mime_type=mime) for data, mime in images]
    parts.append(types.Part.from_text(text=prompt))
    return parts


class GeminiJudge:
    """Rates all K completions of an item in one `generateContent` call.

    Thread-safe: the SDK client and its httpx connection pool are shared by all threads
    (httpx documents its Client as shareable between threads; the SDK copies headers per
    request and keeps no per-call state on the client)."""

    provider = "gemini"

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
        api_version: str | None = None,
    ) -> None:
        if not api_key:
            raise FatalJudgeError("the Gemini judge needs an API key")
        self.model = model
        self.temperature = temperature
        self.prompt_version = prompt_version
        self.timeout_s = timeout_s
        self.max_output_tokens = max_output_tokens
        self._api_key = api_key
        self._client = genai.Client(
            # Explicit, so GOOGLE_GENAI_USE_VERTEXAI in the environment cannot reroute calls.
            vertexai=False,
            api_key=api_key,
            http_options=types.HttpOptions(
                base_url=base_url,
                api_version=api_version,
                # HttpOptions.timeout is in milliseconds (an int); 0 would mean "none".
                timeout=max(1, round(timeout_s * 1000)),
                # One attempt: no retries inside the SDK (its default with no retry options,
                # but said explicitly so a changed default cannot double our retries).
                retry_options=types.HttpRetryOptions(attempts=1),
            ),
        )

    def __repr__(self) -> str:  # never shows the key
        return f"GeminiJudge(model={self.model!r})"

    def close(self) -> None:
        """Close the connection pool (the judge is unusable afterwards)."""
        self._client.close()

    def rate(self, item: JudgeItem) -> JudgeResult:
        prompt = render_judge_prompt(item, self.prompt_version)
        config = self.rating_config(len(item.completions))
        return self._result(self._generate(prompt, item.images, config), len(item.completions))

    def compare(self, item: JudgeItem) -> PairVerdict:
        """Which of two completions is better (pairwise mode), under the pairwise schema."""
        config = types.GenerateContentConfig(
            temperature=self.temperature,
            max_output_tokens=self.max_output_tokens,
            response_mime_type="application/json",
            response_json_schema=pairwise_schema(),
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
            automatic_continuation=False,
        )
        response = self._generate(render_pairwise_prompt(item), item.images, config)
        text, usage, _ = self._text(response)
        return parse_verdict(text, usage=usage)

    def rating_config(self, k: int) -> types.GenerateContentConfig:
        return types.GenerateContentConfig(
            temperature=self.temperature,
            max_output_tokens=self.max_output_tokens,
            response_mime_type="application/json",
            # The same JSON Schema the OpenAI judge sends (generationConfig.responseJsonSchema):
            # its keywords are in the subset Gemini documents for this field.
            response_json_schema=ratings_schema(k),
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
            automatic_continuation=False,
        )

    def batch_request(self, item: JudgeItem) -> types.InlinedRequest:
        """`item`'s request in a batch: the online contents and config, keyed by the item."""
        prompt = render_judge_prompt(item, self.prompt_version)
        config = self.rating_config(len(item.completions))
        # A batch request carries the generation settings only (no client-side options).
        config = config.model_copy(
            update={"automatic_function_calling": None, "automatic_continuation": None}
        )
        return types.InlinedRequest(
            contents=[types.Content(role="user", parts=_parts(prompt, item.images))],
            config=config,
            metadata={"key": item.key},
        )

    def result_from_response(self, response: types.GenerateContentResponse, k: int) -> JudgeResult:
        """A batch's answer to one item, validated as an online answer is."""
        return self._result(response, k)

    @property
    def client(self) -> genai.Client:
        return self._client

    def api_error(self, exc: Exception) -> Exception:
        """A batch call's SDK error as the runner's judge errors."""
        if isinstance(exc, errors.APIError):
            return self._api_error(exc)
        return TransientJudgeError(
            f"Gemini {self.model}: {type(exc).__name__}: {self._scrub(str(exc))}"[:500]
        )

    def complete(
        self, prompt: str, image: bytes | None = None, image_mime: str = "image/png"
    ) -> TextResult:
        config = types.GenerateContentConfig(
            temperature=self.temperature,
            max_output_tokens=self.max_output_tokens,
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
            automatic_continuation=False,
        )
        images = [(image, image_mime)] if image is not None else []
        text, usage, _ = self._text(self._generate(prompt, images, config))
        return require_text(text, usage, f"Gemini {self.model}")

    def _generate(
        self,
        prompt: str,
        images: list[tuple[bytes, str]],
        config: types.GenerateContentConfig,
    ) -> types.GenerateContentResponse:
        parts = _parts(prompt, images)
        try:
            return self._client.models.generate_content(
                model=self.model,
                contents=[types.Content(role="user", parts=parts)],
                config=config,
            )
        except errors.APIError as exc:
            raise self._api_error(exc) from None
        except _TRANSPORT_ERRORS as exc:
            raise TransientJudgeError(
                f"Gemini {self.model}: {type(exc).__name__}: {self._scrub(str(exc))}"
            ) from None
        except errors.UnknownApiResponseError as exc:
            # A 200 whose body is not JSON: a proxy or gateway page, not the model.
            raise TransientJudgeError(
                f"Gemini {self.model}: unreadable answer: {self._scrub(str(exc))[:300]}"
            ) from None

    # -- answers -----------------------------------------------------------------------

    def _result(self, response: types.GenerateContentResponse, k: int) -> JudgeResult:
        text, usage, finish = self._text(response)
        try:
            return parse_ratings(text, k, usage=usage)
        except InvalidJudgeOutput as exc:
            if finish == "MAX_TOKENS":
                raise InvalidJudgeOutput(
                    f"{exc} (the answer was cut at max_output_tokens={self.max_output_tokens})",
                    raw=exc.raw,
                    usage=exc.usage,
                ) from None
            raise

    def _text(self, response: types.GenerateContentResponse) -> tuple[str, Usage, str]:
        """The answer's text, usage and finish reason; blocked or empty is invalid."""
        usage = _usage(response.usage_metadata)
        candidates = response.candidates or []
        if not candidates:
            feedback = response.prompt_feedback
            reason = feedback.block_reason if feedback and feedback.block_reason else None
            why = f"the prompt was blocked ({_enum_name(reason)})" if reason else "no candidates"
            raise InvalidJudgeOutput(
                f"Gemini {self.model}: {why}", raw=_response_json(response), usage=usage
            )
        candidate = candidates[0]
        text = _text_of(candidate)
        finish = _enum_name(candidate.finish_reason)
        if finish in _REFUSED:
            raise InvalidJudgeOutput(
                f"Gemini {self.model}: the answer was blocked (finish reason {finish})",
                raw=text or _response_json(response),
                usage=usage,
            )
        if not text:
            raise InvalidJudgeOutput(
                f"Gemini {self.model}: the answer has no text (finish reason {finish})",
                raw=_response_json(response),
                usage=usage,
            )
        return text, usage, finish

    # -- errors ------------------------------------------------------------------------

    def _api_error(self, exc: errors.APIError) -> Exception:
        code = exc.code
        detail = self._scrub(f"{exc.status or ''} {exc.message or ''}".strip())
        message = f"Gemini {self.model}: HTTP {code}: {detail}"[:500]
        if isinstance(exc, errors.ServerError):
            return TransientJudgeError(message, retry_after=_retry_after(exc))
        if isinstance(exc, errors.ClientError) and code in _TRANSIENT_4XX:
            return TransientJudgeError(message, retry_after=_retry_after(exc))
        # 400 (a bad key is a 400 API_KEY_INVALID on this API), 401, 403, 404: retrying
        # the same request cannot succeed.
        return FatalJudgeError(message)

    def _scrub(self, text: str) -> str:
        # Error bodies and exception texts may echo the request; the key never leaves here.
        return text.replace(self._api_key, "***") if self._api_key else text


def _text_of(candidate: types.Candidate) -> str:
    """The answer's text parts, without thought summaries (thinking models send those)."""
    parts = candidate.content.parts if candidate.content and candidate.content.parts else []
    return "".join(p.text for p in parts if isinstance(p.text, str) and not p.thought)


def _usage(metadata: types.GenerateContentResponseUsageMetadata | None) -> Usage:
    if metadata is None:
        return Usage()
    # Thinking tokens are billed as output, so they count as output here.
    output = (metadata.candidates_token_count or 0) + (metadata.thoughts_token_count or 0)
    return Usage(input_tokens=metadata.prompt_token_count or 0, output_tokens=output)


def _enum_name(value: Any) -> str:
    if value is None:
        return "none"
    return str(getattr(value, "value", value))


def _response_json(response: types.GenerateContentResponse) -> str:
    """The whole answer as JSON, kept as `raw` when there is no text to keep."""
    try:
        return response.model_dump_json(exclude_none=True, exclude={"sdk_http_response"})
    except (TypeError, ValueError):
        return repr(response)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?)s\s*$")


def _retry_after(exc: errors.APIError) -> float | None:
    """Seconds to wait: the google.rpc.RetryInfo detail (where the real Gemini API says it,
    e.g. "retryDelay": "7s", to the millisecond), else a Retry-After header (a proxy's)."""
    error = exc.details.get("error", exc.details) if isinstance(exc.details, dict) else {}
    for detail in error.get("details", []) if isinstance(error, dict) else []:
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("RetryInfo"):
            match = _DURATION.match(str(detail.get("retryDelay", "")))
            if match:
                return float(match.group(1))
    headers = getattr(getattr(exc, "response", None), "headers", None)
    return retry_after_seconds(headers) if headers is not None else None
