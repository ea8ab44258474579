"""The JSON schema a judge is sent states every rule its answer is validated by: any answer
that follows the schema is a valid answer (issue 12, point 4).

The schemas are taken from the requests the real SDKs send to the fake servers, so the
tests check exactly what each provider receives."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from annotation.core.judges.base import ATTRIBUTES, JudgeItem, Usage, parse_ratings, require_text
from annotation.core.judges.gemini_judge import GeminiJudge
from annotation.core.judges.openai_judge import OpenAIJudge
from tests.fake_judge_servers import FakeGeminiServer, FakeOpenAIServer, schema_instance

KS = (1, 2, 3, 4, 6)
# What OpenAI's structured outputs take in strict mode everywhere (Azure's older API
# versions included), and what Gemini documents for response_json_schema.
STRICT_KEYWORDS = {"type", "properties", "required", "additionalProperties", "items", "enum"}
STRICT_KEYWORDS |= {"description", "title", "$defs", "$ref", "anyOf"}
GEMINI_KEYWORDS = {"$id", "$defs", "$ref", "$anchor", "type", "format", "title", "description"}
GEMINI_KEYWORDS |= {"enum", "items", "prefixItems", "minItems", "maxItems", "minimum"}
GEMINI_KEYWORDS |= {"maximum", "anyOf", "oneOf", "properties", "additionalProperties"}
GEMINI_KEYWORDS |= {"required", "propertyOrdering"}
PROPERTY_TEST = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def _item(k: int) -> JudgeItem:
    return JudgeItem(
        key=f"k{k}",
        question="How many shapes are there?",
        completions=tuple(f"There are {n} shapes." for n in range(k)),
    )


def _sent_schemas(server: Any, judge: Any, schema_of: Any) -> dict[int, dict[str, Any]]:
    schemas = {}
    for k in KS:
        judge.rate(_item(k))
        schemas[k] = schema_of(server.requests[-1].body)
    judge.close()
    return schemas


@pytest.fixture(scope="module")
def openai_schemas() -> dict[int, dict[str, Any]]:
    with FakeOpenAIServer() as server:
        judge = OpenAIJudge(model="gpt-4o-mini", api_key="sk-test", base_url=server.base_url)
        return _sent_schemas(
            server, judge, lambda body: body["response_format"]["json_schema"]["schema"]
        )


@pytest.fixture(scope="module")
def gemini_schemas() -> dict[int, dict[str, Any]]:
    with FakeGeminiServer() as server:
        judge = GeminiJudge(model="gemini-2.5-flash", api_key="gm-test", base_url=server.base_url)
        return _sent_schemas(
            server, judge, lambda body: body["generationConfig"]["responseJsonSchema"]
        )


def _keywords(node: Any) -> set[str]:
    """Every keyword used anywhere in a schema (property names are not keywords)."""
    if isinstance(node, list):
        return set().union(*map(_keywords, node)) if node else set()
    if not isinstance(node, dict):
        return set()
    found = set(node) - {"properties"}
    for key, value in node.items():
        if key == "properties":
            found |= {"properties"} | set().union(*map(_keywords, value.values()))
        elif key not in ("enum", "required"):
            found |= _keywords(value)
    return found


def _objects(node: Any) -> list[dict[str, Any]]:
    if isinstance(node, list):
        return [o for value in node for o in _objects(value)]
    if not isinstance(node, dict):
        return []
    here = [node] if node.get("type") == "object" else []
    children = [*node.get("properties", {}).values(), node.get("items")]
    return here + [o for child in children if child is not None for o in _objects(child)]


def test_the_schema_sent_to_openai_is_one_strict_mode_takes_as_it_is(openai_schemas):
    for schema in openai_schemas.values():
        assert _keywords(schema) <= STRICT_KEYWORDS
        for node in _objects(schema):
            # Strict mode: every property required, no other property allowed.
            assert node["additionalProperties"] is False
            assert sorted(node["required"]) == sorted(node["properties"])


def test_the_schema_sent_to_gemini_uses_only_what_response_json_schema_supports(gemini_schemas):
    for schema in gemini_schemas.values():
        assert _keywords(schema) <= GEMINI_KEYWORDS
        # Reasoning first: both providers write properties in the order of the schema.
        assert next(iter(schema["properties"])) == "reasoning"
        assert list(schema["properties"]["response_1"]["properties"]) == ["reasoning", *ATTRIBUTES]


_STRATEGY_KEYWORDS = frozenset(
    {"type", "properties", "required", "additionalProperties", "items", "enum", "description"}
    | {"title", "minimum", "maximum", "minItems", "maxItems"}
)
_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=5,
)


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Every instance of a JSON schema (the subset the judges send; any other keyword is an
    error here, so that a schema this cannot honour fails the test instead of passing it):
    any text, any integer where no range or enum is given, any array length within bounds,
    optional properties present or not, extra properties where they are allowed."""
    unknown = sorted(set(schema) - _STRATEGY_KEYWORDS)
    if unknown:
        raise ValueError(f"no strategy for {unknown}")
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "object":
        properties = schema.get("properties", {})
        required = set(schema.get("required", []))
        fixed = st.fixed_dictionaries(
            {k: from_schema(v) for k, v in properties.items() if k in required},
            optional={k: from_schema(v) for k, v in properties.items() if k not in required},
        )
        extra = schema.get("additionalProperties", True)
        if extra is False:
            return fixed
        values = from_schema(extra) if isinstance(extra, dict) else _JSON_VALUES
        others = st.dictionaries(
            st.text().filter(lambda key: key not in properties), values, max_size=3
        )
        return st.tuples(others, fixed).map(lambda pair: {**pair[0], **pair[1]})
    if kind == "array":
        return st.lists(
            from_schema(schema.get("items", {})),
            min_size=schema.get("minItems", 0),
            max_size=schema.get("maxItems"),
        )
    simple = {
        "integer": st.integers(schema.get("minimum"), schema.get("maximum")),
        "number": st.floats(
            schema.get("minimum"), schema.get("maximum"), allow_nan=False, allow_infinity=False
        ),
        "string": st.text(),
        "boolean": st.booleans(),
        "null": st.none(),
    }
    if kind not in simple:
        raise ValueError(f"no strategy for type {kind!r}")
    return simple[kind]


def _valid_for_every_k(schemas: dict[int, dict[str, Any]], data: st.DataObject) -> None:
    k = data.draw(st.sampled_from(KS), label="k")
    instance = data.draw(from_schema(schemas[k]), label="answer")
    Draft202012Validator(schemas[k]).validate(instance)  # the strategy is honest
    result = parse_ratings(json.dumps(instance), k, usage=Usage(1, 1))
    assert len(result.ratings) == k
    for n, rating in enumerate(result.ratings, start=1):
        assert rating.scores == {a: instance[f"response_{n}"][a] for a in ATTRIBUTES}


@PROPERTY_TEST
@given(data=st.data())
def test_every_instance_of_the_schema_sent_to_openai_is_a_valid_answer(openai_schemas, data):
    _valid_for_every_k(openai_schemas, data)


@PROPERTY_TEST
@given(data=st.data())
def test_every_instance_of_the_schema_sent_to_gemini_is_a_valid_answer(gemini_schemas, data):
    _valid_for_every_k(gemini_schemas, data)


@PROPERTY_TEST
@given(data=st.data())
def test_the_fake_servers_schema_instances_are_valid_answers(openai_schemas, data):
    """The generator the fake servers answer with (`schema_answers`, used end to end below)
    is honest too: its instances follow the schema and are valid answers, whatever the
    seed."""
    import random

    k = data.draw(st.sampled_from(KS))
    seed = data.draw(st.integers(0, 2**32))
    instance = schema_instance(openai_schemas[k], random.Random(seed))
    Draft202012Validator(openai_schemas[k]).validate(instance)
    assert len(parse_ratings(json.dumps(instance), k).ratings) == k


def test_answer_and_rewrite_calls_send_no_schema_and_take_any_text():
    """The judge's own answers and rewrites are free text: no schema is sent, and the one
    rule on the text (not blank) is the whole of what `require_text` checks."""
    with FakeOpenAIServer() as openai_server, FakeGeminiServer() as gemini_server:
        OpenAIJudge(model="m", api_key="k", base_url=openai_server.base_url).complete("Why?")
        GeminiJudge(model="m", api_key="k", base_url=gemini_server.base_url).complete("Why?")
        assert "response_format" not in openai_server.requests[-1].body
        config = gemini_server.requests[-1].body.get("generationConfig", {})
        assert "responseJsonSchema" not in config and "responseSchema" not in config


@settings(max_examples=100, deadline=None)
@given(text=st.text())
def test_any_text_that_is_not_blank_is_a_valid_free_answer(text):
    if text.strip():
        assert require_text(text, Usage(), "judge").text == text.strip()
    else:
        with pytest.raises(Exception, match="empty"):
            require_text(text, Usage(), "judge")


# -- the finding, end to end: a server that answers with instances of the schema sent ----


@pytest.fixture
def ten_items(db, tmp_path):
    """Ten prompts with four completions each: ten judge calls at K=4."""
    from annotation.models import Completion
    from datasets_app.core.shapes import make_shapes
    from datasets_app.services.imports import prompts_import
    from training.models import Checkpoint

    make_shapes(tmp_path / "shapes", n=10, seed=12)
    source = prompts_import(
        path=tmp_path / "shapes" / "scienceqa.parquet", source_name="ten", fmt="scienceqa"
    ).source
    checkpoint = Checkpoint.objects.create(name="policy", model_path="x")
    Completion.objects.bulk_create(
        Completion(prompt=p, checkpoint=checkpoint, text=f"Answer {i} to {p.pk}.", sample_index=i)
        for p in source.prompts.all()
        for i in range(4)
    )
    return source


@pytest.mark.django_db
@pytest.mark.parametrize("provider", ["openai", "gemini"])
def test_a_server_answering_instances_of_the_sent_schema_gets_every_item_rated_at_once(
    provider, ten_items, settings
):
    from annotation.core.judges.runner import RunLimits
    from annotation.models import JudgeCall, Rating
    from annotation.services import judging
    from workers.models import Job

    server_class = FakeOpenAIServer if provider == "openai" else FakeGeminiServer
    with server_class(schema_answers=True) as server:
        if provider == "openai":
            settings.OPENAI_API_KEY, settings.OPENAI_BASE_URL = "sk-test", server.base_url
            config = judging.judge_config_from_spec("openai:gpt-4o-mini")
        else:
            settings.GEMINI_API_KEY, settings.GEMINI_BASE_URL = "gm-test", server.base_url
            config = judging.judge_config_from_spec("gemini:gemini-2.5-flash")
        job = judging.judge_launch(
            judge_config=config,
            selection={"source_id": ten_items.pk},
            limits=RunLimits(concurrency=2, backoff_base_s=0.01, backoff_max_s=0.05),
            enqueue=False,
        )
        judging.judge_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert job.metrics["failures"] == 0
    assert server.calls == 10  # every item rated on its first, and only, paid attempt
    assert JudgeCall.objects.filter(status=JudgeCall.Status.OK, attempts=1).count() == 10
    assert Rating.objects.count() == 40
    # The ratings are the server's: the scores it drew from the schema's 0-4 enum.
    assert sorted(call.raw_response for call in JudgeCall.objects.all()) == sorted(
        r.answer for r in server.requests
    )
    for call in JudgeCall.objects.all():
        drawn = json.loads(call.raw_response)
        for n, completion_id in enumerate(call.completion_ids, start=1):
            rating = Rating.objects.get(completion_id=completion_id, judge=config)
            assert rating.scores == {a: drawn[f"response_{n}"][a] for a in ATTRIBUTES}
