"""The Gemini and OpenAI judges driven through the real SDKs against the fake servers.

Pure tests: no database. They check what goes over the wire (image, schema, temperature,
one request per call) and how every kind of answer maps onto the judge errors."""

from __future__ import annotations

import base64
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from annotation.core.judges.base import (
    ATTRIBUTES,
    FatalJudgeError,
    InvalidJudgeOutput,
    JudgeItem,
    JudgeResult,
    TransientJudgeError,
    ratings_schema,
)
from annotation.core.judges.gemini_judge import GeminiJudge
from annotation.core.judges.openai_judge import OpenAIJudge
from annotation.core.judges.prompt import render_judge_prompt
from tests.conftest import png_bytes
from tests.fake_judge_servers import (
    FakeGeminiServer,
    FakeOpenAIServer,
    expected_scores,
    responses_in_prompt,
)

API_KEY = "sk-test-5ecret-KEY-0123456789"
REPO = Path(__file__).resolve().parent.parent
IMAGE = png_bytes(colour="blue")
COMPLETIONS = (
    "The square is blue.",
    "It is a blue square in the middle of the picture, drawn on a white background.",
    "Red.",
)


def make_item(**changes: Any) -> JudgeItem:
    fields: dict[str, Any] = {
        "key": "prompt:1/completions:1,2,3",
        "question": "What colour is the square?",
        "completions": COMPLETIONS,
        "image": IMAGE,
        "image_mime": "image/png",
        "choices": ("red", "blue", "green"),
        "answer_index": 1,
    }
    fields.update(changes)
    return JudgeItem(**fields)


@dataclass
class Provider:
    name: str
    server: FakeGeminiServer | FakeOpenAIServer
    build: Callable[..., GeminiJudge | OpenAIJudge]

    def judge(self, **options: Any) -> GeminiJudge | OpenAIJudge:
        options.setdefault("api_key", API_KEY)
        options.setdefault("timeout_s", 10.0)
        return self.build(model="judge-model", base_url=self.server.base_url, **options)


@pytest.fixture(params=["gemini", "openai"])
def provider(request: pytest.FixtureRequest) -> Provider:
    if request.param == "gemini":
        return Provider("gemini", request.getfixturevalue("fake_gemini"), GeminiJudge)
    return Provider("openai", request.getfixturevalue("fake_openai"), OpenAIJudge)


def assert_expected(result: JudgeResult, completions: tuple[str, ...] = COMPLETIONS) -> None:
    assert len(result.ratings) == len(completions)
    for rating, text in zip(result.ratings, completions, strict=True):
        assert rating.scores == expected_scores(text)
        assert rating.reasoning


# -- the fake server's own contract ----------------------------------------------------------


def test_the_fake_finds_every_response_of_a_rendered_prompt() -> None:
    item = make_item(hint="A shapes scene.", completions=(" padded \n", "two\nlines", "x"))
    prompt = render_judge_prompt(item, "v1")
    assert responses_in_prompt(prompt) == ["padded", "two\nlines", "x"]
    scores = expected_scores("two\nlines")
    assert set(scores) == set(ATTRIBUTES)
    assert all(0 <= v <= 4 for v in scores.values())
    assert expected_scores(" two\nlines \n") == scores


def test_unknown_fault_is_refused(fake_openai: FakeOpenAIServer) -> None:
    with pytest.raises(ValueError, match="unknown faults"):
        fake_openai.push_faults("418")


# -- a normal call -----------------------------------------------------------------------------


def test_normal_call_returns_the_predicted_ratings_and_usage(provider: Provider) -> None:
    result = provider.judge().rate(make_item())

    assert_expected(result)
    assert result.reasoning
    (request,) = provider.server.requests
    assert provider.server.calls == 1
    assert request.usage[0] > 0 and request.usage[1] > 0
    assert (result.usage.input_tokens, result.usage.output_tokens) == request.usage
    assert result.raw == request.answer
    assert request.images == [("image/png", IMAGE)]
    assert "REFERENCE ANSWER" in request.prompt


def test_gemini_request_on_the_wire(fake_gemini: FakeGeminiServer) -> None:
    judge = GeminiJudge(
        model="gemini-2.5-flash-lite",
        api_key=API_KEY,
        base_url=fake_gemini.base_url,
        temperature=0.3,
        max_output_tokens=1234,
        timeout_s=7.5,
    )
    judge.rate(make_item())

    (request,) = fake_gemini.requests
    assert request.method == "POST"
    assert request.path == "/v1/models/gemini-2.5-flash-lite:generateContent"
    assert request.headers["x-goog-api-key"] == "<redacted>"  # sent as a header, not ?key=
    assert "key=" not in request.path
    assert request.headers["x-server-timeout"] == "8"  # the SDK rounds the timeout up
    body = request.body
    (content,) = body["contents"]
    assert content["role"] == "user"
    image_part, text_part = content["parts"]
    assert image_part["inlineData"]["mime_type"] == "image/png"
    # The SDK sends bytes as URL-safe base64 ("-" and "_"), which the API accepts.
    assert base64.urlsafe_b64decode(image_part["inlineData"]["data"]) == IMAGE
    assert text_part["text"] == render_judge_prompt(make_item(), "v2")
    config = body["generationConfig"]
    assert config["temperature"] == 0.3
    assert config["maxOutputTokens"] == 1234
    assert config["responseMimeType"] == "application/json"
    assert config["responseJsonSchema"] == ratings_schema(3)
    assert "tools" not in body


def test_gemini_api_version_selects_the_path(fake_gemini: FakeGeminiServer) -> None:
    judge = GeminiJudge(
        model="gemini-2.5-flash",
        api_key=API_KEY,
        base_url=fake_gemini.base_url,
        api_version="v1beta",
    )
    assert_expected(judge.rate(make_item()))
    assert fake_gemini.requests[0].path == "/v1beta/models/gemini-2.5-flash:generateContent"


def test_openai_request_on_the_wire(fake_openai: FakeOpenAIServer) -> None:
    judge = OpenAIJudge(
        model="gpt-4o-mini",
        api_key=API_KEY,
        base_url=fake_openai.base_url,
        temperature=0.2,
        max_output_tokens=999,
        timeout_s=7.5,
    )
    judge.rate(make_item())

    (request,) = fake_openai.requests
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.headers["authorization"] == "<redacted>"
    assert request.headers["x-stainless-retry-count"] == "0"
    body = request.body
    assert body["model"] == "gpt-4o-mini"
    assert body["temperature"] == 0.2
    assert body["max_tokens"] == 999
    (message,) = body["messages"]
    assert message["role"] == "user"
    text_part, image_part = message["content"]
    assert text_part == {"type": "text", "text": render_judge_prompt(make_item(), "v2")}
    assert image_part["type"] == "image_url"
    url = image_part["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == IMAGE
    response_format = body["response_format"]
    assert response_format["type"] == "json_schema"
    spec = response_format["json_schema"]
    assert spec["name"] == "helpsteer_ratings"
    assert spec["strict"] is True
    assert spec["schema"] == ratings_schema(3)  # strict mode takes it as it is


def test_openai_switches_to_max_completion_tokens_when_refused() -> None:
    with FakeOpenAIServer(reject_max_tokens=True) as server:
        judge = OpenAIJudge(model="o4-mini", api_key=API_KEY, base_url=server.base_url)
        assert_expected(judge.rate(make_item()))
        assert_expected(judge.rate(make_item()))
        first, second, third = server.requests
        assert "max_tokens" in first.body and first.status == 400
        assert second.body["max_completion_tokens"] == 4096 and "max_tokens" not in second.body
        assert "max_tokens" not in third.body  # remembered: one refusal per judge


def test_an_item_without_image_sends_text_only(provider: Provider) -> None:
    item = make_item(image=None, choices=(), answer_index=None, completions=("a", "b"))
    result = provider.judge().rate(item)

    assert_expected(result, ("a", "b"))
    (request,) = provider.server.requests
    assert request.images == []
    if provider.name == "gemini":
        assert len(request.body["contents"][0]["parts"]) == 1
    else:
        assert [p["type"] for p in request.body["messages"][0]["content"]] == ["text"]


def test_judges_share_one_client_across_threads(provider: Provider) -> None:
    provider.server.latency_s = 0.05
    judge = provider.judge()
    items = [
        make_item(key=f"k{i}", completions=(f"answer {i}", f"other {i}", f"third {i}"))
        for i in range(24)
    ]
    lock, in_flight, most = threading.Lock(), [0], [0]

    def rate(item: JudgeItem) -> JudgeResult:
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
        try:
            return judge.rate(item)
        finally:
            with lock:
                in_flight[0] -= 1

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(rate, items))

    for item, result in zip(items, results, strict=True):
        assert_expected(result, item.completions)
    assert provider.server.calls == 24
    assert most[0] > 1  # the calls really shared the client at the same time


# -- transient errors: 429, 5xx, timeouts, dropped connections ------------------------------------


def test_429_is_transient_with_the_servers_retry_after(provider: Provider) -> None:
    provider.server.retry_after = 3
    provider.server.push_faults("429")
    with pytest.raises(TransientJudgeError) as caught:
        provider.judge().rate(make_item())

    assert caught.value.retry_after == 3.0
    assert provider.server.requests[0].headers.get("retry-after") is None  # (a request header)
    assert provider.server.calls == 1  # the SDK did not retry on its own
    assert API_KEY not in str(caught.value)


def test_500_is_transient_and_not_retried_by_the_sdk(provider: Provider) -> None:
    provider.server.push_faults("500")
    with pytest.raises(TransientJudgeError):
        provider.judge().rate(make_item())
    assert provider.server.calls == 1
    # The fault is spent: the next call is answered normally.
    assert_expected(provider.judge().rate(make_item()))


def test_a_hang_past_the_timeout_is_transient_and_quick(provider: Provider) -> None:
    provider.server.hang_s = 2.0
    provider.server.push_faults("hang")
    judge = provider.judge(timeout_s=0.5)
    with pytest.raises(TransientJudgeError) as caught:
        judge.rate(make_item())

    assert "Timeout" in str(caught.value)  # the client gave up; the server had not answered
    assert provider.server.calls == 1


def test_a_dropped_connection_is_transient(provider: Provider) -> None:
    provider.server.push_faults("drop")
    with pytest.raises(TransientJudgeError):
        provider.judge().rate(make_item())
    assert provider.server.calls == 1


def test_an_unreachable_server_is_transient(provider: Provider) -> None:
    base_url = provider.server.base_url
    provider.server.stop()
    judge = provider.build(model="m", api_key=API_KEY, base_url=base_url, timeout_s=2.0)
    with pytest.raises(TransientJudgeError):
        judge.rate(make_item())


# -- answers that are not a complete rating ----------------------------------------------------


@pytest.mark.parametrize("fault", ["not_json", "missing_completion", "score_7", "score_high"])
def test_a_bad_answer_is_invalid_output_with_the_raw_text(provider: Provider, fault: str) -> None:
    provider.server.push_faults(fault)
    with pytest.raises(InvalidJudgeOutput) as caught:
        provider.judge().rate(make_item())

    (request,) = provider.server.requests
    assert request.answer
    assert caught.value.raw == request.answer
    assert (caught.value.usage.input_tokens, caught.value.usage.output_tokens) == request.usage


def test_a_blocked_answer_is_invalid_output(provider: Provider) -> None:
    provider.server.push_faults("blocked")
    with pytest.raises(InvalidJudgeOutput) as caught:
        provider.judge().rate(make_item())
    expected = "SAFETY" if provider.name == "gemini" else "can't help"
    assert expected in caught.value.raw
    assert caught.value.usage.input_tokens > 0


# -- fatal errors ------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["400", "401", "403", "404"])
def test_client_errors_are_fatal_and_never_show_the_key(provider: Provider, fault: str) -> None:
    provider.server.push_faults(fault)
    with pytest.raises(FatalJudgeError) as caught:
        provider.judge().rate(make_item())

    message = str(caught.value)
    assert fault in message
    assert API_KEY not in message
    assert API_KEY not in repr(caught.value)
    assert provider.server.calls == 1


def test_401_echoing_the_key_is_scrubbed(provider: Provider) -> None:
    provider.server.push_faults("401")
    with pytest.raises(FatalJudgeError) as caught:
        provider.judge().rate(make_item())
    # The fake echoes the key it received; the judge must not repeat it.
    assert "Incorrect API key provided" in str(caught.value)
    assert API_KEY not in str(caught.value)
    assert API_KEY not in repr(provider.judge())


def test_a_wrong_key_is_fatal(provider: Provider) -> None:
    provider.server.api_key = "the-right-key"
    with pytest.raises(FatalJudgeError) as caught:
        provider.judge().rate(make_item())
    assert API_KEY not in str(caught.value)
    right = provider.judge(api_key="the-right-key").rate(make_item())
    assert_expected(right)


# -- the server's rate limit -------------------------------------------------------------------


def test_the_server_enforces_its_rate_limit(provider: Provider) -> None:
    rate = 5.0
    provider.server.rate_limit_per_s = rate  # starts with a full bucket of 5
    judge = provider.judge()
    outcomes: list[JudgeResult | TransientJudgeError] = []
    lock = threading.Lock()

    def call(i: int) -> None:
        try:
            result: JudgeResult | TransientJudgeError = judge.rate(make_item(key=str(i)))
        except TransientJudgeError as exc:
            result = exc
        with lock:
            outcomes.append(result)

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(call, range(15)))
    elapsed = time.monotonic() - started

    refused = [o for o in outcomes if isinstance(o, TransientJudgeError)]
    served = [o for o in outcomes if isinstance(o, JudgeResult)]
    assert provider.server.calls == 15
    assert provider.server.violations == len(refused)
    assert len(served) <= rate + elapsed * rate + 1  # the bucket's capacity plus its refill
    assert len(refused) >= 15 - (rate + elapsed * rate + 1)
    for exc in refused:
        # The exact wait (retry-after-ms / RetryInfo), not the header's whole seconds.
        assert exc.retry_after is not None and 0 < exc.retry_after <= 1 / rate + 0.01
    assert [r.fault for r in provider.server.requests].count("rate_limited") == len(refused)


def test_spaced_requests_stay_within_the_rate_limit(provider: Provider) -> None:
    provider.server.rate_limit_per_s = 20.0
    judge = provider.judge()
    for _ in range(25):  # 5 more than the bucket holds, spaced at the refill rate
        judge.rate(make_item())
        time.sleep(1 / 20)
    assert provider.server.violations == 0


# -- the servers themselves --------------------------------------------------------------------


def test_stop_does_not_wait_for_a_hang() -> None:
    server = FakeOpenAIServer(hang_s=30).start()
    server.push_faults("hang")
    judge = OpenAIJudge(model="m", api_key=API_KEY, base_url=server.base_url, timeout_s=60)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            judge.rate(make_item())
        except BaseException as exc:
            errors.append(exc)

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    while server.calls == 0:
        time.sleep(0.01)
    stopper = threading.Thread(target=server.stop, daemon=True)
    stopper.start()
    stopper.join(timeout=10)  # a guard against hanging the suite, not a measurement
    assert not stopper.is_alive()
    caller.join(timeout=5)
    assert not caller.is_alive()
    assert errors and isinstance(errors[0], TransientJudgeError)


def test_reset_forgets_requests_and_faults(fake_gemini: FakeGeminiServer) -> None:
    judge = GeminiJudge(model="m", api_key=API_KEY, base_url=fake_gemini.base_url)
    fake_gemini.push_faults("500", "429")
    with pytest.raises(TransientJudgeError):
        judge.rate(make_item())
    assert fake_gemini.pending_faults == ["429"]
    fake_gemini.reset()
    server = fake_gemini
    assert (server.calls, server.requests, server.pending_faults) == (0, [], [])
    assert_expected(judge.rate(make_item()))


# -- purity ------------------------------------------------------------------------------------


def test_importing_the_judges_does_not_import_django() -> None:
    code = (
        "import sys\n"
        "import annotation.core.judges.gemini_judge, annotation.core.judges.openai_judge\n"
        "assert 'django' not in sys.modules, sorted(m for m in sys.modules if 'django' in m)\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_gemini_safety_finish_and_truncation_are_invalid_output() -> None:
    from google.genai import types

    judge = GeminiJudge(model="m", api_key=API_KEY, base_url="http://127.0.0.1:9")

    def answer(text: str | None, finish: str) -> types.GenerateContentResponse:
        parts = [types.Part(text=text)] if text is not None else []
        return types.GenerateContentResponse(
            candidates=[
                types.Candidate(
                    content=types.Content(role="model", parts=parts), finish_reason=finish
                )
            ],
            usage_metadata=types.GenerateContentResponseUsageMetadata(
                prompt_token_count=10, candidates_token_count=5, thoughts_token_count=7
            ),
        )

    with pytest.raises(InvalidJudgeOutput, match="SAFETY") as caught:
        judge._result(answer(None, "SAFETY"), 3)
    assert "SAFETY" in caught.value.raw
    assert caught.value.usage.output_tokens == 12  # thinking is billed as output
    with pytest.raises(InvalidJudgeOutput, match="max_output_tokens") as caught:
        judge._result(answer('{"reasoning": "cut', "MAX_TOKENS"), 3)
    assert caught.value.raw == '{"reasoning": "cut'
