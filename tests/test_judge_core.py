"""The judge core without a network: validation, the oracle, the runner's limits and retries."""

from __future__ import annotations

import json
import threading

import pytest

from annotation.core.judges.base import (
    ATTRIBUTES,
    CompletionRating,
    FatalJudgeError,
    InvalidJudgeOutput,
    JudgeItem,
    JudgeResult,
    TransientJudgeError,
    Usage,
    extract_json,
    parse_ratings,
    ratings_schema,
    response_key,
)
from annotation.core.judges.cache import item_cache_key
from annotation.core.judges.oracle import OracleJudge
from annotation.core.judges.pricing import cost_usd
from annotation.core.judges.prompt import answer_layout, render_judge_prompt
from annotation.core.judges.runner import RateLimiter, RunLimits, backoff_delay, run_items

ITEM = JudgeItem(
    key="p1",
    question="How many shapes are in the image?",
    completions=(
        "The answer is B.",
        "A",
        "There are many many many shapes here, in this picture, all of them of a different colour.",
    ),
    choices=("2", "3", "4"),
    answer_index=1,
)


def answer(k: int, **override) -> str:
    body: dict = {"reasoning": "Compared them."}
    for n in range(1, k + 1):
        body[response_key(n)] = {"reasoning": f"r{n}", **dict.fromkeys(ATTRIBUTES, n % 5)}
    body.update(override)
    return json.dumps(body)


def test_a_complete_answer_parses_in_the_order_of_the_responses():
    # Keys in any order: JSON objects are unordered, the property name is the number.
    body = json.loads(answer(3))
    raw = json.dumps({key: body[key] for key in reversed(body)} | {"reasoning": "x"})
    result = parse_ratings(raw, 3, usage=Usage(10, 5))
    assert [r.helpfulness for r in result.ratings] == [1, 2, 3]
    assert [r.reasoning for r in result.ratings] == ["r1", "r2", "r3"]
    assert result.usage == Usage(10, 5) and result.reasoning == "x"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("I think response 1 is best.", "not JSON"),
        (answer(2), "responses 3 of 3 are not rated"),
        (answer(4), "rates response 4 of 3"),
        (answer(3, response_2=[2, 2, 2, 2, 2]), "response 2: the rating is not an object"),
        (answer(3).replace('"helpfulness": 3', '"helpfulness": 7'), "outside 0-4"),
        (answer(3).replace('"helpfulness": 3', '"helpfulness": "high"'), "not an integer"),
        (answer(3).replace('"helpfulness": 3', '"helpfulness": 3.0'), "not an integer"),
        (answer(3).replace('"helpfulness": 3', '"helpfulness": true'), "not an integer"),
        (answer(3).replace(', "verbosity": 3', ""), "verbosity is None"),
        (answer(3).replace('"reasoning": "r1"', '"reasoning": 1'), "reasoning is not text"),
        (json.dumps([1, 2]), "not a JSON object"),
    ],
)
def test_anything_incomplete_is_invalid_and_keeps_the_raw_answer(raw, message):
    with pytest.raises(InvalidJudgeOutput, match=message) as caught:
        parse_ratings(raw, 3)
    assert caught.value.raw == raw


def test_empty_reasoning_is_accepted_since_no_schema_both_providers_take_can_forbid_it():
    raw = json.dumps(
        {"reasoning": "", "response_1": {"reasoning": " ", **dict.fromkeys(ATTRIBUTES, 2)}}
    )
    result = parse_ratings(raw, 1)
    assert result.reasoning == "" and result.ratings[0].reasoning == ""


def test_json_is_found_inside_prose_and_fences():
    inner = answer(1)
    assert extract_json(f"Sure! Here it is:\n```json\n{inner}\n```") == json.loads(inner)
    assert extract_json(f'Ratings {inner} -- done "}}"') == json.loads(inner)


def test_schema_asks_for_reasoning_before_scores_and_every_response_once():
    schema = ratings_schema(4)
    assert list(schema["properties"]) == ["reasoning", *(f"response_{n}" for n in range(1, 5))]
    assert schema["required"] == list(schema["properties"])
    assert schema["additionalProperties"] is False
    entry = schema["properties"]["response_1"]
    assert list(entry["properties"]) == ["reasoning", *ATTRIBUTES]
    assert entry["properties"]["helpfulness"] == {"type": "integer", "enum": [0, 1, 2, 3, 4]}


def test_prompt_v1_carries_the_guide_the_question_and_every_response():
    text = render_judge_prompt(ITEM, "v1")
    for word in ("HELPFULNESS", "CORRECTNESS", "COHERENCE", "COMPLEXITY", "VERBOSITY"):
        assert word in text
    assert "RESPONSE 3:\nThere are many" in text and "B. 3" in text
    assert "one entry for each of the 3 responses" in text
    with pytest.raises(ValueError, match="unknown judge prompt version"):
        render_judge_prompt(ITEM, "v9")


def test_the_layout_the_prompt_shows_is_an_answer_the_validator_takes():
    for k in (1, 2, 3, 5):
        item = JudgeItem(key="p", question="q", completions=tuple(f"c{n}" for n in range(k)))
        text = render_judge_prompt(item, "v1")
        layout = answer_layout(k)
        assert layout in text and '"ratings"' not in text
        assert f'"response_{k}"' in layout and f'"response_{k + 1}"' not in layout
        if k <= 2:  # short enough to be shown whole: it parses as it stands
            assert len(parse_ratings(layout, k).ratings) == k


def test_oracle_scores_the_right_answer_high_and_the_wrong_one_low():
    result = OracleJudge().rate(ITEM)
    right, wrong, rambling = result.ratings
    assert (right.correctness, right.helpfulness) == (4, 4)
    assert (wrong.correctness, wrong.helpfulness) == (1, 1)
    assert rambling.correctness == 0 and rambling.coherence == 2  # "many" three times
    assert right.verbosity < rambling.verbosity


def test_oracle_reads_yes_no_answers():
    item = JudgeItem(
        "p", "Is there a red circle?", ("No, there is not.", "Yes."), reference_answer="no"
    )
    no, yes = OracleJudge().rate(item).ratings
    assert no.correctness == 4 and yes.correctness == 1


def test_oracle_uses_the_shapes_scene_when_there_is_no_reference():
    scene = {
        "width": 64,
        "height": 64,
        "background": "white",
        "shapes": [{"kind": "circle", "colour": "red", "x": 20, "y": 20, "size": 18}],
    }
    item = JudgeItem("p", "Is there a red circle in the image?", ("Yes",), facts={"scene": scene})
    assert OracleJudge().rate(item).ratings[0].correctness == 4


def test_cache_key_changes_with_anything_the_judge_sees():
    base = dict(provider="openai", model="gpt-4o-mini", prompt_version="v1", temperature=0.0)
    key = item_cache_key(**base, item=ITEM)
    assert key == item_cache_key(**base, item=ITEM)
    other_text = JudgeItem(**{**ITEM.__dict__, "completions": ("x", "y", "z")})
    assert key != item_cache_key(**base, item=other_text)
    assert key != item_cache_key(**{**base, "prompt_version": "v2"}, item=ITEM)
    assert key != item_cache_key(**{**base, "temperature": 0.5}, item=ITEM)


def test_cost_from_the_price_table():
    assert cost_usd("gpt-4o-mini-2024-07-18", Usage(1_000_000, 1_000_000)) == pytest.approx(0.75)
    assert cost_usd("gemini-2.5-flash", Usage(2_000_000, 0)) == pytest.approx(0.60)
    assert cost_usd("my-local-model", Usage(10**6, 10**6)) == 0.0


# --- the runner ------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.now += seconds


def test_requests_are_spaced_evenly_at_the_limit():
    clock = FakeClock()
    limiter = RateLimiter(120, None, clock=clock, sleep=clock.sleep)  # one per 0.5 s
    starts = []
    for _ in range(5):
        limiter.acquire()
        starts.append(clock.now)
    assert starts == [0.0, 0.5, 1.0, 1.5, 2.0]


def test_tokens_per_minute_make_big_requests_wait():
    clock = FakeClock()
    limiter = RateLimiter(None, 600, clock=clock, sleep=clock.sleep)  # 10 tokens a second
    limiter.acquire(600)  # the whole first minute's bucket
    limiter.acquire(100)
    assert clock.now == pytest.approx(10.0)


def test_backoff_honours_retry_after_and_grows_with_jitter():
    limits = RunLimits(backoff_base_s=1.0, backoff_max_s=8.0)
    assert 3.0 <= backoff_delay(1, limits, 3.0) <= 4.0
    delays = [backoff_delay(n, limits, None) for n in (1, 2, 3, 4, 5)]
    assert 0.5 <= delays[0] <= 1.0 and 4.0 <= delays[4] <= 8.0


class ScriptedJudge:
    """A judge whose answers per item follow a script: exceptions to raise, then a result."""

    provider, model = "fake", "fake"

    def __init__(self, script: dict[str, list]) -> None:
        self.script = script
        self.calls: dict[str, int] = {}
        self.lock = threading.Lock()

    def rate(self, item: JudgeItem) -> JudgeResult:
        with self.lock:
            n = self.calls.get(item.key, 0)
            self.calls[item.key] = n + 1
        steps = self.script.get(item.key, [])
        if n < len(steps):
            raise steps[n]
        rating = CompletionRating(2, 2, 2, 2, 2, "ok")
        return JudgeResult((rating,) * len(item.completions), "fine", "{}", Usage(100, 50))


def _items(n: int) -> list[JudgeItem]:
    return [JudgeItem(key=f"i{i}", question="q", completions=("a", "b")) for i in range(n)]


def _run(judge, items, **limits):
    outcomes = []
    sleeps = []
    summary = run_items(
        judge,
        items,
        RunLimits(**limits),
        on_outcome=outcomes.append,
        price=lambda u: u.input_tokens / 1000,
        sleep=sleeps.append,
    )
    return summary, {o.item.key: o for o in outcomes}, sleeps


def test_transient_errors_are_retried_after_retry_after():
    judge = ScriptedJudge(
        {"i0": [TransientJudgeError("429", retry_after=2.0), TransientJudgeError("500")]}
    )
    summary, outcomes, sleeps = _run(judge, _items(3), concurrency=2)
    assert summary.succeeded == 3 and outcomes["i0"].attempts == 3
    assert any(2.0 <= s <= 2.3 for s in sleeps)


def test_invalid_answers_are_asked_again_then_recorded_with_their_raw_text():
    bad = InvalidJudgeOutput("score 7", raw='{"ratings": [7]}', usage=Usage(100, 10))
    judge = ScriptedJudge({"i0": [bad, bad, bad], "i1": [bad]})
    summary, outcomes, _ = _run(judge, _items(2), max_invalid_answers=3)
    assert not outcomes["i0"].ok and outcomes["i0"].raw == '{"ratings": [7]}'
    assert "score 7" in outcomes["i0"].error and outcomes["i0"].usage == Usage(300, 30)
    assert outcomes["i1"].ok and outcomes["i1"].attempts == 2
    assert (summary.succeeded, summary.failed) == (1, 1)


def test_a_fatal_error_stops_the_run():
    judge = ScriptedJudge({f"i{i}": [FatalJudgeError("401: bad key")] * 9 for i in range(20)})
    with pytest.raises(FatalJudgeError, match="bad key"):
        _run(judge, _items(20), concurrency=2)
    assert sum(judge.calls.values()) <= 4


def test_the_run_stops_when_the_cost_limit_is_reached():
    summary, outcomes, _ = _run(ScriptedJudge({}), _items(50), concurrency=1, max_cost_usd=0.45)
    assert summary.stopped_at_max_cost and len(outcomes) == 5  # 0.1 $ each


def test_the_oracle_reads_a_short_answer_by_its_first_word():
    from annotation.core.judges.oracle import rate_completion

    item = JudgeItem("p", "How many shapes are in the image?", ("2", "Two.", "3", ""))
    rated = [rate_completion(text, item, "2") for text in item.completions]
    assert [r.correctness for r in rated] == [4, 1, 1, 0]
    # yes/no questions keep their rule: "no" or "not" anywhere reads as no
    yes_no = JudgeItem("q", "Is there a red shape in the image?", ("There is not.",))
    assert rate_completion("There is not.", yes_no, "no").correctness == 4
