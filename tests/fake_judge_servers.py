"""Fake Gemini and OpenAI HTTP servers that speak the wire protocols the real SDKs use.

They let tests and benchmarks drive `google-genai` and `openai` end to end (request
building, error mapping, timeouts) without a network. Standard library only: a
`ThreadingHTTPServer` on 127.0.0.1 with an OS-chosen port, run in a daemon thread.

By default a server rates every "RESPONSE n:" block of the prompt with scores derived from
a hash of the response's text, so a test can predict them with `expected_scores(text)`; a
pairwise request (its schema has a `winner`) is answered by the higher sum of those scores.
Faults queued with `push_faults(...)` are consumed one per request, in order:

    "429"                 429 with Retry-After (seconds: `retry_after`), in the API's error format
    "500"                 500 in the API's error format
    "400" "401" "403" "404"  that status in the API's error format ("401" echoes the key it got,
                          as a careless proxy might, so callers can check they never repeat it)
    "hang"                wait `hang_s` seconds (longer than the client's timeout), then answer
    "drop"                close the connection without answering
    "not_json"            a 200 whose text is prose, not JSON
    "missing_completion"  valid JSON that rates only K-1 responses
    "score_7"             one score is 7
    "score_high"          one score is the string "high"
    "blocked"             Gemini: no candidates, promptFeedback.blockReason SAFETY;
                          OpenAI: content null and a refusal

`rate_limit_per_s` makes the server enforce a token bucket (capacity = the rate, at least 1,
refilled continuously): a request that finds it empty gets a 429 at once (no latency, no
fault consumed) whose Retry-After is the wait rounded up to whole seconds, with the exact
wait in `retry-after-ms` (OpenAI) or the RetryInfo detail (Gemini), and counts in
`violations`.

Constructor options (all keyword-only; each is also a writable attribute on a running
server): `retry_after` (seconds, default 1), `hang_s` (default 5), `latency_s` (default 0),
`rate_limit_per_s` (default None: no limit), `api_key` (default None: any key is accepted;
else another key gets 401 from OpenAI, 400 API_KEY_INVALID from Gemini), `model_version`,
`schema_answers` (default False; True: answer every request that sends a JSON schema with a
random instance of that very schema, seeded by the request's number, as a server with
constrained decoding would, whatever the prompt says; `schema_instance` makes them);
FakeOpenAIServer also takes `reject_max_tokens` (answer 400 to `max_tokens`, as OpenAI's
reasoning models do). Counters: `calls` (every HTTP request), `violations`, `requests`
(a list of RecordedRequest), `pending_faults`; `reset()` clears them and the fault queue.

    with FakeGeminiServer(latency_s=0.05) as server:
        judge = GeminiJudge(model="m", api_key="k", base_url=server.base_url)
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import math
import random
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Self

from annotation.core.judges.base import ATTRIBUTES, response_key

FAULTS = frozenset(
    {
        "429",
        "500",
        "400",
        "401",
        "403",
        "404",
        "hang",
        "drop",
        "not_json",
        "missing_completion",
        "score_7",
        "score_high",
        "blocked",
    }
)
SECRET_HEADERS = frozenset({"authorization", "x-goog-api-key", "api-key", "x-api-key"})
IMAGE_TOKENS = 258  # what Gemini bills for a small image; any fixed number would do
PROSE_ANSWER = "All of the responses look reasonable to me; the first one is the most helpful."

_RESPONSE_BLOCK = re.compile(r"^RESPONSE (\d+):\n", re.MULTILINE)


def expected_scores(text: str) -> dict[str, int]:
    """The scores the fake servers give a response: five bytes of sha256(text.strip()),
    each mod 5. Stripping makes it independent of how the prompt pads the text."""
    digest = hashlib.sha256(text.strip().encode("utf-8")).digest()
    return {attribute: digest[i] % 5 for i, attribute in enumerate(ATTRIBUTES)}


def responses_in_prompt(prompt: str) -> list[str]:
    """The texts of the "RESPONSE n:" blocks, in order (the last one runs to the end)."""
    matches = list(_RESPONSE_BLOCK.finditer(prompt))
    texts = []
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(prompt)
        texts.append(prompt[match.end() : end].strip())
    return texts


def rating_answer(responses: list[str], fault: str | None = None) -> str:
    """The JSON text a judge model would answer, optionally broken the way `fault` says."""
    if fault == "not_json":
        return PROSE_ANSWER
    answer: dict[str, Any] = {"reasoning": "Compared every response with the image."}
    for n, text in enumerate(responses, start=1):
        answer[response_key(n)] = {
            "reasoning": f"Response {n} was read carefully.",
            **expected_scores(text),
        }
    if fault == "missing_completion" and responses:
        del answer[response_key(len(responses))]
    elif fault == "score_7" and responses:
        answer[response_key(1)]["helpfulness"] = 7
    elif fault == "score_high" and responses:
        answer[response_key(1)]["correctness"] = "high"
    return json.dumps(answer)


def pairwise_answer(responses: list[str], fault: str | None = None) -> str:
    """A pairwise judge's JSON: the response whose `expected_scores` sum is higher wins
    (equal sums tie); "not_json" breaks it as for ratings."""
    if fault == "not_json":
        return PROSE_ANSWER
    sums = [sum(expected_scores(text).values()) for text in responses[:2]]
    winner = (
        "tie" if len(sums) < 2 or sums[0] == sums[1] else response_key(1 + sums.index(max(sums)))
    )
    return json.dumps({"reasoning": "Compared both with the image.", "winner": winner})


# What `schema_instance` knows; any other keyword is an error, so that a schema the fake
# cannot honour fails a test instead of being half obeyed.
_INSTANCE_KEYWORDS = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "enum",
        "description",
        "title",
        "minimum",
        "maximum",
        "minItems",
        "maxItems",
    }
)
_SAMPLE_TEXTS = ("", " ", "ok", "Looked at the image: the second one is wrong.", "naïve\n«quoted»")


def schema_instance(schema: Any, rng: random.Random) -> Any:
    """A random instance of a JSON schema, as a server with constrained decoding writes one:
    everything the schema allows is fair (empty strings, any integer where no range or enum
    is given, any array length within the stated bounds, properties in schema order)."""
    if not isinstance(schema, dict):
        raise ValueError(f"not a schema: {schema!r}")
    unknown = sorted(set(schema) - _INSTANCE_KEYWORDS)
    if unknown:
        raise ValueError(f"the fake server cannot generate {unknown}")
    if "enum" in schema:
        return rng.choice(schema["enum"])
    kind = schema.get("type")
    if kind == "object":
        required = set(schema.get("required", []))
        instance = {
            name: schema_instance(sub, rng)
            for name, sub in schema.get("properties", {}).items()
            if name in required or rng.random() < 0.5
        }
        extra = schema.get("additionalProperties", True)
        if extra is not False and rng.random() < 0.5:
            instance[f"extra_{rng.randrange(1000)}"] = (
                schema_instance(extra, rng) if isinstance(extra, dict) else rng.randrange(10)
            )
        return instance
    if kind == "array":
        low = schema.get("minItems", 0)
        high = schema.get("maxItems", low + 5)
        items = schema.get("items", {})
        return [schema_instance(items, rng) for _ in range(rng.randint(low, high))]
    if kind == "integer":
        return rng.randint(schema.get("minimum", -1000), schema.get("maximum", 1000))
    if kind == "number":
        return rng.uniform(schema.get("minimum", -1000.0), schema.get("maximum", 1000.0))
    if kind == "string":
        return rng.choice(_SAMPLE_TEXTS)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    raise ValueError(f"the fake server cannot generate type {kind!r}")


def free_answer(prompt: str, fault: str | None = None) -> str:
    """The free text the fake model writes for a prompt: stable, ends with a letter."""
    if fault in ("not_json", "missing_completion", "score_7", "score_high"):
        return ""  # an empty answer: what a free-text call has for "invalid"
    digest = hashlib.sha256(prompt.strip().encode("utf-8")).hexdigest()
    # A prompt that dictates its last line ("The answer is B.") gets it, as a model following
    # a rewrite template would write it; otherwise a letter from the hash.
    told = re.search(r"The answer is ([A-Z])\.", prompt)
    letter = told.group(1) if told else "ABCD"[int(digest, 16) % 4]
    return f"Analysis: looked at it ({digest[:8]}).\nThe answer is {letter}."


@dataclass
class RecordedRequest:
    """One request as the server saw it. Secret headers keep their name, not their value."""

    number: int  # 1-based, in order of arrival
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: Any  # the parsed JSON body, or None
    prompt: str = ""  # every text part of the request, joined
    images: list[tuple[str, bytes]] = field(default_factory=list)  # (mime type, bytes)
    fault: str | None = None  # the fault this request consumed, "rate_limited" or None
    status: int = 0  # what the server answered (0 while it is still answering)
    usage: tuple[int, int] = (0, 0)  # (input, output) tokens the server reported
    answer: str = ""  # the model's text in a 200 answer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDKs' connection pools expect
    # Headers and body go out in two writes; with Nagle on, the client's delayed ACK adds
    # ~40 ms to every answer, which would swamp latency_s in benchmarks.
    disable_nagle_algorithm = True
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.owner._track(self.connection, add=True)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self.server.owner._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output quiet

    def do_POST(self) -> None:
        self.server.owner._handle(self)

    def do_GET(self) -> None:
        self.server.owner._handle(self)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # Do not join handler threads on close: one may be inside a "hang".
    block_on_close = False
    owner: _FakeServer


class _FakeServer:
    """What both fake APIs share: lifecycle, recording, faults, latency and rate limit."""

    provider: ClassVar[str] = ""

    def __init__(
        self,
        *,
        retry_after: float = 1,
        hang_s: float = 5.0,
        latency_s: float = 0.0,
        rate_limit_per_s: float | None = None,
        api_key: str | None = None,
        model_version: str = "fake-judge-1",
        schema_answers: bool = False,
    ) -> None:
        self.retry_after = retry_after
        self.schema_answers = schema_answers
        self.hang_s = hang_s
        self.latency_s = latency_s
        self.api_key = api_key  # when set, any other key is refused as the real API would
        self.model_version = model_version
        self.requests: list[RecordedRequest] = []
        self.calls = 0
        self.violations = 0
        self._lock = threading.Lock()
        self._faults: list[str] = []
        self._tokens = 0.0
        self._refilled_at = 0.0
        self._closing = threading.Event()
        self._connections: set[socket.socket] = set()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._rate_limit_per_s: float | None = None
        self.rate_limit_per_s = rate_limit_per_s  # fills the bucket

    @property
    def rate_limit_per_s(self) -> float | None:
        return self._rate_limit_per_s

    @rate_limit_per_s.setter
    def rate_limit_per_s(self, rate: float | None) -> None:
        """Setting it (also on a running server) starts with a full bucket."""
        if rate is not None and rate <= 0:
            raise ValueError("rate_limit_per_s must be positive (or None for no limit)")
        self._rate_limit_per_s = rate
        self._reset_bucket()

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> Self:
        if self._httpd is not None:
            return self
        self._closing.clear()
        httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        httpd.owner = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-{self.provider}-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop at once: wake any hanging handler and cut open keep-alive connections."""
        if self._httpd is None:
            return
        self._closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the fake server is not running")
        return self._httpd.server_address[1]

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- control -----------------------------------------------------------------------

    def push_faults(self, *faults: str) -> None:
        unknown = [f for f in faults if f not in FAULTS]
        if unknown:
            raise ValueError(f"unknown faults {unknown}; known: {sorted(FAULTS)}")
        with self._lock:
            self._faults.extend(faults)

    def reset(self) -> None:
        """Forget requests, counters and queued faults; refill the rate-limit bucket."""
        with self._lock:
            self.requests.clear()
            self.calls = 0
            self.violations = 0
            self._faults.clear()
        self._reset_bucket()

    @property
    def pending_faults(self) -> list[str]:
        with self._lock:
            return list(self._faults)

    def _reset_bucket(self) -> None:
        with self._lock:
            self._tokens = self._capacity()
            self._refilled_at = time.monotonic()

    def _capacity(self) -> float:
        return max(1.0, self.rate_limit_per_s or 0.0)

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    # -- request handling --------------------------------------------------------------

    def _admit(self) -> tuple[int, str | None, float]:
        """Count the request, apply the rate limit, then take the next fault.

        Returns (request number, fault or "rate_limited" or None, seconds until a token).
        A rate-limited request consumes no fault: it never reached the "model"."""
        with self._lock:
            self.calls += 1
            number = self.calls
            rate = self._rate_limit_per_s
            if rate:
                now = time.monotonic()
                elapsed = now - self._refilled_at
                self._tokens = min(self._capacity(), self._tokens + elapsed * rate)
                self._refilled_at = now
                if self._tokens < 1.0:
                    self.violations += 1
                    return number, "rate_limited", (1.0 - self._tokens) / rate
                self._tokens -= 1.0
            fault = self._faults.pop(0) if self._faults else None
            return number, fault, 0.0

    def _handle(self, handler: _Handler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        headers = {
            k.lower(): ("<redacted>" if k.lower() in SECRET_HEADERS else v)
            for k, v in handler.headers.items()
        }
        number, fault, wait = self._admit()
        prompt, images = self._content_of(body)
        record = RecordedRequest(
            number=number,
            method=handler.command,
            path=handler.path,
            headers=headers,
            body=body,
            prompt=prompt,
            images=images,
            fault=fault,
        )
        with self._lock:
            self.requests.append(record)

        if fault == "rate_limited":
            # A real limiter answers at once, without the model's latency.
            record.status = 429
            self._send_rate_limited(handler, wait)
            return
        if self.latency_s and self._closing.wait(self.latency_s):
            return
        if fault == "hang":
            if self._closing.wait(self.hang_s):
                return  # shutting down: nobody is waiting for this answer any more
            fault = None
        if fault == "drop":
            record.status = -1
            handler.close_connection = True
            with contextlib.suppress(OSError):
                handler.connection.shutdown(socket.SHUT_RDWR)
            return

        secret = self._secret_of(handler)
        if fault in {"400", "401", "403", "404", "500", "429"}:
            status = int(fault)
            record.status = status
            self._send_error(handler, status, secret=secret)
            return
        if not self._is_route(handler.command, handler.path):
            record.status = 404
            self._send_error(handler, 404, secret=None, message=f"no route for {handler.path}")
            return
        if self.api_key is not None and secret != self.api_key:
            record.status = self._bad_key_status
            self._send_error(handler, self._bad_key_status, secret=secret, message=self._bad_key)
            return
        refusal = self._refusal(body)
        if refusal is not None:
            record.status = refusal[0]
            self._send_error(handler, refusal[0], secret=secret, message=refusal[1])
            return
        responses = responses_in_prompt(prompt)
        schema = self._schema_of(body)
        if self.schema_answers and schema is not None and fault is None:
            # Seeded by the request's number: a rerun of a test sees the same answers.
            answer = json.dumps(schema_instance(schema, random.Random(number)))
        elif isinstance(schema, dict) and "winner" in (schema.get("properties") or {}):
            answer = pairwise_answer(responses, fault)
        elif responses:
            answer = rating_answer(responses, fault)
        else:  # a prompt without responses to rate asks for free text (answer or rewrite)
            answer = free_answer(prompt, fault)
        usage = (
            max(1, len(prompt) // 4) + IMAGE_TOKENS * len(images),
            max(1, len(answer) // 4),
        )
        record.usage = usage
        record.answer = "" if fault == "blocked" else answer
        record.status = 200
        payload = self._success(record, answer, blocked=fault == "blocked")
        self._send_json(handler, 200, payload)

    # -- provider hooks ----------------------------------------------------------------

    _bad_key_status = 401
    _bad_key: str | None = None  # the message for a wrong key (None: the status's default)

    def _refusal(self, body: Any) -> tuple[int, str] | None:
        """(status, message) when the API would refuse this request's parameters."""
        return None

    def _is_route(self, method: str, path: str) -> bool:
        raise NotImplementedError

    def _schema_of(self, body: Any) -> Any:
        """The JSON schema the request asks the answer to follow, or None."""
        raise NotImplementedError

    def _content_of(self, body: Any) -> tuple[str, list[tuple[str, bytes]]]:
        raise NotImplementedError

    def _secret_of(self, handler: _Handler) -> str | None:
        raise NotImplementedError

    def _error_body(self, status: int, message: str, retry_after: float | None) -> Any:
        raise NotImplementedError

    def _success(self, record: RecordedRequest, answer: str, *, blocked: bool) -> Any:
        raise NotImplementedError

    def _retry_headers(self, seconds: float) -> dict[str, str]:
        # Retry-After is whole seconds by the HTTP standard.
        return {"Retry-After": str(max(1, math.ceil(seconds)))}

    # -- responses ---------------------------------------------------------------------

    def _send_json(
        self,
        handler: _Handler,
        status: int,
        payload: Any,
        headers: dict[str, str] | None = None,
    ) -> None:
        data = json.dumps(payload).encode("utf-8")
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json; charset=UTF-8")
            handler.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(data)
            handler.wfile.flush()
        except OSError:
            # The client gave up (a timeout after a "hang"): nothing to answer.
            handler.close_connection = True

    def _send_error(
        self,
        handler: _Handler,
        status: int,
        *,
        secret: str | None,
        message: str | None = None,
    ) -> None:
        retry_after = float(self.retry_after) if status == 429 else None
        if message is None:
            message = _DEFAULT_MESSAGES.get(status, "error")
            if status == 401:
                message = f"Incorrect API key provided: {secret or ''}."
        headers = self._retry_headers(retry_after) if retry_after is not None else {}
        if retry_after is not None:
            # The fault's Retry-After is exactly `retry_after`, not rounded up.
            headers["Retry-After"] = _seconds_text(retry_after)
        self._send_json(handler, status, self._error_body(status, message, retry_after), headers)

    def _send_rate_limited(self, handler: _Handler, wait: float) -> None:
        message = f"Rate limit of {self.rate_limit_per_s:g} requests per second reached."
        self._send_json(
            handler, 429, self._error_body(429, message, wait), self._retry_headers(wait)
        )


def _seconds_text(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


_DEFAULT_MESSAGES = {
    400: "Request contains an invalid argument.",
    401: "Incorrect API key provided.",
    403: "The caller does not have permission.",
    404: "The requested model was not found.",
    429: "Resource has been exhausted (e.g. check quota).",
    500: "An internal error has occurred. Please retry.",
}


class FakeOpenAIServer(_FakeServer):
    """`POST /v1/chat/completions` answering `chat.completion` objects.

    `base_url` ("http://127.0.0.1:PORT/v1") is what `OpenAI(base_url=...)` takes."""

    provider = "openai"

    def __init__(self, *, reject_max_tokens: bool = False, **options: Any) -> None:
        super().__init__(**options)
        # Behave like OpenAI's reasoning models, which refuse `max_tokens`.
        self.reject_max_tokens = reject_max_tokens

    def _refusal(self, body: Any) -> tuple[int, str] | None:
        if self.reject_max_tokens and isinstance(body, dict) and "max_tokens" in body:
            return 400, (
                "Unsupported parameter: 'max_tokens' is not supported with this model. "
                "Use 'max_completion_tokens' instead."
            )
        return None

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    def _is_route(self, method: str, path: str) -> bool:
        return method == "POST" and path.split("?", 1)[0] == "/v1/chat/completions"

    def _schema_of(self, body: Any) -> Any:
        response_format = body.get("response_format") if isinstance(body, dict) else None
        if not isinstance(response_format, dict) or response_format.get("type") != "json_schema":
            return None
        return (response_format.get("json_schema") or {}).get("schema")

    def _secret_of(self, handler: _Handler) -> str | None:
        value = handler.headers.get("Authorization", "")
        return value.removeprefix("Bearer ").strip() or None

    def _content_of(self, body: Any) -> tuple[str, list[tuple[str, bytes]]]:
        texts: list[str] = []
        images: list[tuple[str, bytes]] = []
        messages = body.get("messages", []) if isinstance(body, dict) else []
        for message in messages:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, str):
                texts.append(content)
                continue
            for part in content or []:
                if part.get("type") == "text":
                    texts.append(part.get("text", ""))
                elif part.get("type") == "image_url":
                    url = (part.get("image_url") or {}).get("url", "")
                    decoded = _data_url(url)
                    if decoded is not None:
                        images.append(decoded)
        return "\n".join(texts), images

    def _error_body(self, status: int, message: str, retry_after: float | None) -> Any:
        kinds = {
            400: ("invalid_request_error", None),
            401: ("invalid_request_error", "invalid_api_key"),
            403: ("invalid_request_error", "unsupported_country_region_territory"),
            404: ("invalid_request_error", "model_not_found"),
            429: ("requests", "rate_limit_exceeded"),
            500: ("server_error", None),
        }
        kind, code = kinds.get(status, ("server_error", None))
        return {"error": {"message": message, "type": kind, "param": None, "code": code}}

    def _retry_headers(self, seconds: float) -> dict[str, str]:
        # OpenAI also sends the exact wait in milliseconds; its SDK prefers that header.
        return {**super()._retry_headers(seconds), "retry-after-ms": str(math.ceil(seconds * 1000))}

    def _success(self, record: RecordedRequest, answer: str, *, blocked: bool) -> Any:
        usage = record.usage
        message: dict[str, Any] = {"role": "assistant", "content": answer, "refusal": None}
        if blocked:
            message = {"role": "assistant", "content": None, "refusal": "I can't help with that."}
        body = record.body if isinstance(record.body, dict) else {}
        return {
            "id": f"chatcmpl-fake{record.number}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", self.model_version),
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
            ],
            "usage": {
                "prompt_tokens": usage[0],
                "completion_tokens": usage[1],
                "total_tokens": usage[0] + usage[1],
            },
            "system_fingerprint": "fp_fake",
        }


class FakeGeminiServer(_FakeServer):
    """`POST /{api_version}/models/{model}:generateContent` answering GenerateContentResponse.

    `base_url` ("http://127.0.0.1:PORT") is what `types.HttpOptions(base_url=...)` takes; the
    SDK adds the version ("v1" unless told otherwise) and the path."""

    provider = "gemini"
    _bad_key_status = 400  # the real API refuses a bad key with 400 API_KEY_INVALID
    _bad_key = "API key not valid. Please pass a valid API key."
    _PATH = re.compile(r"^/(?P<version>[^/]+)/models/(?P<model>[^/:]+):generateContent$")

    @property
    def base_url(self) -> str:
        return self.root_url

    def _is_route(self, method: str, path: str) -> bool:
        return method == "POST" and self._PATH.match(path.split("?", 1)[0]) is not None

    def _schema_of(self, body: Any) -> Any:
        config = body.get("generationConfig") if isinstance(body, dict) else None
        return config.get("responseJsonSchema") if isinstance(config, dict) else None

    def _secret_of(self, handler: _Handler) -> str | None:
        value = handler.headers.get("x-goog-api-key")
        if value:
            return value.strip()
        match = re.search(r"[?&]key=([^&]+)", handler.path)
        return match.group(1) if match else None

    def _content_of(self, body: Any) -> tuple[str, list[tuple[str, bytes]]]:
        texts: list[str] = []
        images: list[tuple[str, bytes]] = []
        contents = body.get("contents", []) if isinstance(body, dict) else []
        for content in contents:
            for part in content.get("parts", []) if isinstance(content, dict) else []:
                if "text" in part:
                    texts.append(part["text"])
                inline = part.get("inlineData") or part.get("inline_data")
                if inline:
                    mime = inline.get("mimeType") or inline.get("mime_type") or ""
                    images.append((mime, _b64decode(inline.get("data", ""))))
        return "\n".join(texts), images

    def _error_body(self, status: int, message: str, retry_after: float | None) -> Any:
        statuses = {
            400: "INVALID_ARGUMENT",
            401: "UNAUTHENTICATED",
            403: "PERMISSION_DENIED",
            404: "NOT_FOUND",
            429: "RESOURCE_EXHAUSTED",
            500: "INTERNAL",
        }
        error: dict[str, Any] = {
            "code": status,
            "message": message,
            "status": statuses.get(status, "UNKNOWN"),
        }
        if retry_after is not None:
            # Where the real API says how long to wait: a google.rpc.RetryInfo detail.
            error["details"] = [
                {
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": f"{retry_after:.3f}".rstrip("0").rstrip(".") + "s",
                }
            ]
        return {"error": error}

    def _success(self, record: RecordedRequest, answer: str, *, blocked: bool) -> Any:
        usage = record.usage
        usage_metadata = {
            "promptTokenCount": usage[0],
            "candidatesTokenCount": 0 if blocked else usage[1],
            "totalTokenCount": usage[0] + (0 if blocked else usage[1]),
        }
        if blocked:
            return {
                "promptFeedback": {"blockReason": "SAFETY"},
                "usageMetadata": usage_metadata,
                "modelVersion": self.model_version,
            }
        return {
            "candidates": [
                {
                    "content": {"parts": [{"text": answer}], "role": "model"},
                    "finishReason": "STOP",
                    "index": 0,
                }
            ],
            "usageMetadata": usage_metadata,
            "modelVersion": self.model_version,
            "responseId": f"fake-{record.number}",
        }


def _data_url(url: str) -> tuple[str, bytes] | None:
    match = re.match(r"^data:(?P<mime>[^;,]+);base64,(?P<data>.*)$", url, re.DOTALL)
    if match is None:
        return None
    return match.group("mime"), _b64decode(match.group("data"))


def _b64decode(text: str) -> bytes:
    """Standard or URL-safe base64, padded or not (protobuf JSON accepts all four; the
    Gemini SDK sends URL-safe)."""
    text = text.strip().replace("-", "+").replace("_", "/")
    return base64.b64decode(text + "=" * (-len(text) % 4))
