"""The REST API: tokens, its schema and docs, and each endpoint under the pages' rules.

Every request here carries a token in `Authorization: Bearer`, as a script would; role rules
per persona for every API URL are in tests/test_permission_matrix.py.
"""

from __future__ import annotations

import io
import json
import uuid

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from annotation.models import ATTRIBUTES, Completion, JudgeConfig, PairPick, Rating
from annotation.services import campaigns
from api.models import ApiToken
from api.services import api_token_create
from datasets_app.models import DatasetVersion
from training.models import Checkpoint
from workers.jobs import job_create
from workers.models import Job

pytestmark = pytest.mark.django_db


class Api:
    """A client that sends one person's token with every request."""

    def __init__(self, token: str | None) -> None:
        self.client = Client(raise_request_exception=False)
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def get(self, url: str, **params):
        return self.client.get(url, params, headers=self.headers)

    def post(self, url: str, body=None, **kwargs):
        if kwargs.get("files"):
            return self.client.post(url, {**(body or {}), **kwargs["files"]}, headers=self.headers)
        data = json.dumps(body) if body is not None else ""
        return self.client.post(url, data, content_type="application/json", headers=self.headers)


@pytest.fixture
def api_as(make_user):
    """api_as("curator") -> an Api with a fresh token of a user of that role."""
    made = {}

    def build(role: str | None) -> Api:
        if role not in made:
            user = make_user(f"api-{role or 'outsider'}", role=role)
            made[role] = api_token_create(user=user, name="tests")[1]
        return Api(made[role])

    return build


@pytest.fixture
def policy():
    return Checkpoint.objects.create(name="policy", model_path="x")


@pytest.fixture
def rated_world(shapes_source, policy):
    """Two completions on every shapes prompt and a campaign over them."""
    Completion.objects.bulk_create(
        Completion(prompt=p, checkpoint=policy, text=f"answer {i}", sample_index=i)
        for p in shapes_source.prompts.all()
        for i in range(2)
    )
    return campaigns.campaign_create(
        name="api round", selection={"source_id": shapes_source.pk}, overlap=1
    )


def _fields(response) -> dict[str, str]:
    """A 400's messages by where they are ("body.k" -> message)."""
    assert response.status_code == 400, response.content
    return {".".join(map(str, e["loc"])): e["msg"] for e in response.json()["detail"]}


# --- schema, docs, tokens ----------------------------------------------------------------


def test_the_openapi_schema_is_public_and_names_the_bearer_scheme(client):
    schema = client.get("/api/openapi.json").json()
    assert schema["components"]["securitySchemes"]["TokenAuth"]["scheme"] == "bearer"
    paths = schema["paths"]
    for path in (
        "/api/completions",
        "/api/assignments/{assignment_id}/submission",
        "/api/judge-ratings",
        "/api/versions",
        "/api/versions/{version_id}/files/{name}",
        "/api/jobs/{job_id}",
        "/api/jobs/generation",
        "/api/prompts/import",
    ):
        assert path in paths, path
    # The launch bodies are read off the pages' forms: the Generate page's k, with its default.
    k = schema["components"]["schemas"]["GenerationIn"]["properties"]["k"]
    assert k["default"] == 4


def test_the_docs_page_serves_swagger_ui_from_local_static_files(client):
    page = client.get("/api/docs").content.decode()
    assert "/static/ninja/swagger-ui-bundle.js" in page and "/static/ninja/swagger-ui.css" in page
    assert "cdn" not in page.lower() and "https://" not in page
    assert client.get("/static/ninja/swagger-ui-bundle.js").status_code == 200


def test_anonymous_requests_get_a_json_401_not_the_login_page(client, rated_world):
    for url in ("/api/versions", "/api/jobs/1", "/api/files/exports/x/train.parquet"):
        response = client.get(url)
        assert response.status_code == 401, url
        assert response.json() == {"detail": "Unauthorized"}
    assert client.post("/api/completions", {}, content_type="application/json").status_code == 401


def test_unknown_revoked_and_malformed_tokens_get_401(curator):
    token, raw = api_token_create(user=curator)
    assert Api(raw).get("/api/versions").status_code == 200
    token.refresh_from_db()
    assert token.last_used_at is not None
    for wrong in (raw[:-1] + ("A" if raw[-1] != "A" else "B"), "ps_nothing", "Basic abc"):
        assert Api(wrong).get("/api/versions").status_code == 401
    call_command("api_token", curator.username, revoke=token.prefix, stdout=io.StringIO())
    assert Api(raw).get("/api/versions").status_code == 401


def test_a_token_is_stored_only_as_a_digest(curator):
    token, raw = api_token_create(user=curator, name="ci")
    stored = ApiToken.objects.filter(pk=token.pk).values().get()
    assert raw not in json.dumps(stored, default=str)
    assert raw.startswith(f"ps_{token.prefix}_") and len(token.digest) == 64


def test_the_command_prints_the_token_on_its_last_line(curator):
    out = io.StringIO()
    call_command(
        "api_token", curator.username, name="judge runner", stdout=out, stderr=io.StringIO()
    )
    raw = out.getvalue().rstrip("\n").splitlines()[-1]
    assert Api(raw).get("/api/versions").status_code == 200
    token = ApiToken.objects.get(user=curator)
    assert token.name == "judge runner"
    listing = io.StringIO()
    call_command("api_token", curator.username, list=True, stdout=listing)
    assert token.prefix in listing.getvalue() and "active" in listing.getvalue()


def test_the_command_refuses_an_unknown_user_or_prefix(curator):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="no user"):
        call_command("api_token", "nobody", stdout=io.StringIO())
    with pytest.raises(CommandError, match="no active token"):
        call_command("api_token", curator.username, revoke="deadbeef", stdout=io.StringIO())


def test_the_tokens_page_shows_a_new_token_once_and_revokes_it(client, annotator, curator):
    client.force_login(annotator)
    url = reverse("account:tokens")
    assert client.get(url).status_code == 200
    page = client.post(url, {"name": "laptop"}).content.decode()
    token = ApiToken.objects.get(user=annotator)
    raw = page.split("<code>ps_", 1)[1].split("</code>", 1)[0]
    assert Api(f"ps_{raw}").get("/api/campaigns").status_code == 200
    again = client.get(url).content.decode()
    assert token.prefix in again and f"ps_{raw}" not in again and "laptop" in again
    # Someone else's prefix revokes nothing.
    client.force_login(curator)
    client.post(reverse("account:token_revoke", args=[token.prefix]))
    assert ApiToken.objects.get(pk=token.pk).revoked_at is None
    client.force_login(annotator)
    client.post(reverse("account:token_revoke", args=[token.prefix]))
    assert ApiToken.objects.get(pk=token.pk).revoked_at is not None
    assert Api(f"ps_{raw}").get("/api/campaigns").status_code == 401


# --- dataset versions --------------------------------------------------------------------


@pytest.fixture
def exported():
    """A ready version with an export in storage, and one other version."""
    version = DatasetVersion.objects.create(
        name="pairs", kind="dpo", status="ready", strategy="best_vs_worst", row_count=3
    )
    DatasetVersion.objects.create(name="sft-set", kind="sft", status="ready", strategy="steerlm")
    prefix = "exports/pairs/v1-abc"
    default_storage.save(f"{prefix}/train.parquet", ContentFile(b"PAR1 rows"))
    default_storage.save(f"{prefix}/README.md", ContentFile(b"# card"))
    version.export_path = prefix
    version.save(update_fields=["export_path"])
    return version


def test_a_curators_token_lists_versions_paginated_and_filtered(api_as, exported):
    curator = api_as("curator")
    listing = curator.get("/api/versions").json()
    assert listing["count"] == 2 and {v["name"] for v in listing["items"]} == {"pairs", "sft-set"}
    assert curator.get("/api/versions", kind="dpo").json()["items"][0]["id"] == exported.pk
    page = curator.get("/api/versions", page=2, page_size=1).json()
    assert page["count"] == 2 and len(page["items"]) == 1
    detail = curator.get(f"/api/versions/{exported.pk}").json()
    assert detail["exported"] is True
    assert {f["name"] for f in detail["files"]} == {"train.parquet", "README.md"}


def test_an_annotators_token_cannot_download_exports(api_as, exported):
    url = f"/api/versions/{exported.pk}/files/train.parquet"
    assert api_as("annotator").get(url).status_code == 403
    assert (
        api_as("annotator").get("/api/files/exports/pairs/v1-abc/train.parquet").status_code == 403
    )
    response = api_as("curator").get(url)
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b"PAR1 rows"
    assert (
        api_as("curator").get(f"/api/versions/{exported.pk}/files/nope.parquet").status_code == 404
    )
    assert api_as("curator").get(f"/api/versions/{exported.pk}/files/..").status_code == 404


def test_with_object_storage_a_download_redirects_to_a_signed_url_after_the_check(
    api_as, exported, monkeypatch
):
    """The API answers through the media view's own helper (config.downloads): with a
    storage that signs URLs (config.storage; the real S3 SDK is exercised by the media
    view's tests), the check comes first, then a redirect to the short-lived URL."""

    class Signing:
        def exists(self, key):
            return key == "exports/pairs/v1-abc/train.parquet"

        def signed_url(self, key, *, expire):
            return f"https://objects.example/{key}?X-Amz-Expires={expire}"

    monkeypatch.setattr("config.downloads.default_storage", Signing())
    url = f"/api/versions/{exported.pk}/files/train.parquet"
    assert api_as("annotator").get(url).status_code == 403
    response = api_as("curator").get(url)
    assert response.status_code == 302
    assert response["Location"] == (
        "https://objects.example/exports/pairs/v1-abc/train.parquet?X-Amz-Expires=300"
    )
    assert (
        api_as("curator").get(f"/api/versions/{exported.pk}/files/gone.parquet").status_code == 404
    )


def test_a_version_export_is_queued_and_polled(api_as, exported):
    curator = api_as("curator")
    queued = curator.post(f"/api/versions/{exported.pk}/export")
    assert queued.status_code == 202
    job = queued.json()
    assert (job["kind"], job["status"]) == ("export", "queued")
    polled = curator.get(f"/api/jobs/{job['id']}").json()
    assert {k: polled[k] for k in ("status", "progress_done", "progress_total", "error")} == {
        "status": "queued",
        "progress_done": 0,
        "progress_total": 0,
        "error": "",
    }
    # The job page's rule: staff see every job, others only the jobs they started.
    assert api_as("staff").get(f"/api/jobs/{job['id']}").status_code == 200
    assert api_as("annotator").get(f"/api/jobs/{job['id']}").status_code == 403
    assert curator.get("/api/jobs/999999").status_code == 404


def test_a_job_error_is_shown_to_whoever_may_see_the_job(api_as, make_user):
    api = api_as("curator")
    owner = ApiToken.objects.get().user
    job = job_create(kind=Job.Kind.EXPORT, title="x", created_by=owner)
    Job.objects.filter(pk=job.pk).update(
        status="failed", error="the dataset version no longer exists", error_detail="Traceback"
    )
    body = api.get(f"/api/jobs/{job.pk}").json()
    assert body["error"] == "the dataset version no longer exists" and "Traceback" not in str(body)


# --- completions -------------------------------------------------------------------------


def test_completions_from_an_outside_generator_are_stored_once(api_as, shapes_source):
    prompt = shapes_source.prompts.first()
    curator = api_as("curator")
    rows = [
        {"prompt_id": prompt.pk, "checkpoint": "gpt-4o", "text": f"A {i}", "sample_index": i}
        for i in range(2)
    ]
    first = curator.post("/api/completions", {"completions": rows})
    assert first.status_code == 201, first.content
    assert [c["created"] for c in first.json()["completions"]] == [True, True]
    outside = Checkpoint.objects.get(name="gpt-4o")
    assert outside.model_path == "(outside generator)"
    # A retry changes nothing; the same sample with another text is refused, all or none.
    again = curator.post("/api/completions", {"completions": rows})
    assert [c["created"] for c in again.json()["completions"]] == [False, False]
    ids = [c["id"] for c in first.json()["completions"]]
    assert ids == [c["id"] for c in again.json()["completions"]]
    assert sorted(ids) == sorted(
        Completion.objects.filter(checkpoint=outside).values_list("id", flat=True)
    )
    changed = [{**rows[0], "sample_index": 5}, {**rows[1], "text": "B"}]
    errors = _fields(curator.post("/api/completions", {"completions": changed}))
    assert list(errors) == ["body.completions.1.text"]
    assert "exists with another text" in errors["body.completions.1.text"]
    assert Completion.objects.filter(checkpoint=outside).count() == 2


def test_bad_completions_get_field_level_400s_and_write_nothing(api_as, shapes_source):
    prompt = shapes_source.prompts.first()
    curator = api_as("curator")
    rows = [
        {"prompt_id": prompt.pk, "checkpoint": "new-model", "text": "fine"},
        {"prompt_id": 999999, "checkpoint": "new-model", "text": "   "},
        {"prompt_id": prompt.pk, "checkpoint": "new-model", "text": "again"},
    ]
    errors = _fields(curator.post("/api/completions", {"completions": rows}))
    assert errors == {
        "body.completions.1.prompt_id": "no prompt with id 999999",
        "body.completions.1.text": "the completion is empty",
        "body.completions.2.sample_index": "the same sample as row 0",
    }
    missing = _fields(curator.post("/api/completions", {"completions": [{"text": "x"}]}))
    assert set(missing) == {
        "body.completions.0.prompt_id",
        "body.completions.0.checkpoint",
    }
    assert not Checkpoint.objects.filter(name="new-model").exists()
    assert Completion.objects.count() == 0
    bad_json = curator.client.post(
        "/api/completions", "{nope", content_type="application/json", headers=curator.headers
    )
    assert bad_json.status_code == 400


def test_annotators_cannot_push_completions(api_as, shapes_source):
    body = {"completions": [{"prompt_id": 1, "checkpoint": "m", "text": "t"}]}
    assert api_as("annotator").post("/api/completions", body).status_code == 403


# --- a person's ratings, through their assignment ------------------------------------------


def _submission(item, *, score=3, **changes) -> dict:
    ids = item.completion_ids
    body = {
        "scores": {str(c): dict.fromkeys(ATTRIBUTES, score) for c in ids},
        "best": ids[0],
        "worst": ids[-1],
        "comment": "",
        "token": uuid.uuid4().hex,
    }
    return {**body, **changes}


def test_an_annotator_rates_an_item_as_the_page_does(api_as, rated_world):
    annotator = api_as("annotator")
    item = annotator.post(f"/api/campaigns/{rated_world.pk}/next").json()
    assert len(item["completions"]) == 2 and item["prompt"]["images"]
    assert "reference_answer" not in item["prompt"]
    image = annotator.get(item["prompt"]["images"][0])
    assert image.status_code == 200  # the image of their own item: the media rule
    assignment = campaigns.Assignment.objects.get(pk=item["id"])
    body = _submission(assignment.item)
    done = annotator.post(item["submit_url"], body)
    assert done.status_code == 200 and done.json()["replayed"] is False
    assert annotator.post(item["submit_url"], body).json()["replayed"] is True
    user = assignment.annotator
    assert Rating.objects.filter(user=user).count() == 2
    pick = PairPick.objects.get(annotator=user)
    assert (pick.chosen_id, pick.rejected_id) == (body["best"], body["worst"])


@pytest.mark.parametrize(
    "change",
    [
        {"score": 7},
        {"score": "3"},  # the page's script may send digits as text: accepted by both
        {"best": None},
        {"tie": True, "best": None, "worst": None},
        {"tie": "true"},  # only JSON true marks a tie, on the page as here
        {"token": "short"},
        {"comment": "x" * 5001},
        {"scores": {}},
        {"scores": "all fours"},
    ],
)
def test_a_submission_is_refused_exactly_when_the_page_refuses_it(
    api_as, rated_world, client, change
):
    annotator = api_as("annotator")
    item = annotator.post(f"/api/campaigns/{rated_world.pk}/next").json()
    assignment = campaigns.Assignment.objects.get(pk=item["id"])
    score = change.pop("score", 3)
    body = _submission(assignment.item, score=score, **change)
    client.force_login(assignment.annotator)
    page = client.post(
        reverse("annotation:submit", args=[assignment.pk]),
        json.dumps(body),
        content_type="application/json",
    )
    Rating.objects.all().delete()
    PairPick.objects.all().delete()
    body["token"] = body["token"] if body["token"] == "short" else uuid.uuid4().hex
    api = annotator.post(item["submit_url"], body)
    assert api.status_code == page.status_code
    if page.status_code == 400:
        assert [e["msg"] for e in api.json()["detail"]] == page.json()["errors"]
        assert all(e["loc"][0] == "body" and len(e["loc"]) > 1 for e in api.json()["detail"])


def test_an_out_of_range_score_is_refused_on_its_field(api_as, rated_world):
    annotator = api_as("annotator")
    item = annotator.post(f"/api/campaigns/{rated_world.pk}/next").json()
    assignment = campaigns.Assignment.objects.get(pk=item["id"])
    body = _submission(assignment.item)
    first = str(assignment.item.completion_ids[0])
    body["scores"][first]["correctness"] = 5
    errors = _fields(annotator.post(item["submit_url"], body))
    assert errors == {
        f"body.scores.{first}.correctness": "response 1: correctness needs a score from 0 to 4"
    }
    assert Rating.objects.count() == 0 and PairPick.objects.count() == 0


def test_another_annotators_assignment_is_a_404(api_as, rated_world, make_user):
    other = make_user("bob", role="annotator")
    assignment = campaigns.assignment_next(campaign=rated_world, user=other)
    url = f"/api/assignments/{assignment.pk}/submission"
    annotator = api_as("annotator")
    assert annotator.get(f"/api/assignments/{assignment.pk}").status_code == 404
    assert annotator.post(url, _submission(assignment.item)).status_code == 404
    assert Rating.objects.count() == 0


# --- a judge's answer ----------------------------------------------------------------------


def _answer(k: int, score=3) -> dict:
    return {
        "reasoning": "compared all of them",
        **{
            f"response_{n}": {"reasoning": f"about {n}", **dict.fromkeys(ATTRIBUTES, score)}
            for n in range(1, k + 1)
        },
    }


def test_a_judges_answer_is_stored_as_its_ratings(api_as, rated_world):
    judge = JudgeConfig.objects.create(name="gpt-4o outside", provider="openai", model="gpt-4o")
    prompt_completions = list(
        Completion.objects.filter(prompt=rated_world.items.first().prompt).values_list(
            "id", flat=True
        )
    )
    staff = api_as("staff")
    body = {"judge": judge.name, "completion_ids": prompt_completions, "answer": _answer(2)}
    stored = staff.post("/api/judge-ratings", body)
    assert stored.status_code == 201, stored.content
    assert len(stored.json()["rating_ids"]) == 2
    rating = Rating.objects.get(pk=stored.json()["rating_ids"][0])
    assert rating.judge == judge and rating.reasoning == "compared all of them\n\nabout 1"
    # As in a judging run: a completion this judge rated keeps its rating.
    text = json.dumps(_answer(2, score=1))
    again = staff.post("/api/judge-ratings", {**body, "judge": str(judge.pk), "answer": text})
    assert again.json() == {"rating_ids": [], "kept": 2}
    assert set(Rating.objects.values_list("helpfulness", flat=True)) == {3}


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ({**_answer(2), "response_2": {**_answer(2)["response_2"], "verbosity": 5}}, "outside 0-4"),
        (
            {**_answer(2), "response_1": {**_answer(2)["response_1"], "coherence": "4"}},
            "not an integer",
        ),
        (_answer(1), "responses 2 of 2 are not rated"),
        (_answer(3), "rates response 3 of 2"),
        ("I think the first one is better.", "not JSON"),
    ],
)
def test_a_judges_answer_is_refused_as_the_runner_refuses_it(api_as, rated_world, answer, message):
    from annotation.core.judges.base import InvalidJudgeOutput, parse_ratings

    raw = answer if isinstance(answer, str) else json.dumps(answer)
    with pytest.raises(InvalidJudgeOutput, match=message):
        parse_ratings(raw, 2)
    judge = JudgeConfig.objects.create(name="outside", provider="openai", model="gpt-4o")
    ids = list(
        Completion.objects.filter(prompt=rated_world.items.first().prompt).values_list(
            "id", flat=True
        )
    )
    errors = _fields(
        api_as("staff").post(
            "/api/judge-ratings", {"judge": judge.name, "completion_ids": ids, "answer": answer}
        )
    )
    assert list(errors) == ["body.answer"] and message in errors["body.answer"]
    assert Rating.objects.count() == 0


def test_judge_pushes_name_an_existing_rating_judge_and_one_prompt(api_as, rated_world):
    staff = api_as("staff")
    items = list(rated_world.items.order_by("pk")[:2])
    mixed = [items[0].completion_ids[0], items[1].completion_ids[0]]
    reward = JudgeConfig.objects.create(name="rm", provider="reward", model="rm")
    assert "body.judge" in _fields(
        staff.post(
            "/api/judge-ratings", {"judge": "nobody", "completion_ids": mixed, "answer": _answer(2)}
        )
    )
    errors = _fields(
        staff.post(
            "/api/judge-ratings", {"judge": "rm", "completion_ids": mixed, "answer": _answer(2)}
        )
    )
    assert errors["body.judge"] == f"a {reward.provider} judge does not give the five scores"
    assert errors["body.completion_ids"] == "a judge call rates completions of one prompt"
    assert api_as("curator").post("/api/judge-ratings", {}).status_code == 403


def test_a_judge_run_elsewhere_needs_no_key_here_but_cannot_be_launched_here(
    api_as, rated_world, settings
):
    from annotation.services import judging

    settings.OPENAI_API_KEY = ""
    ids = list(
        Completion.objects.filter(prompt=rated_world.items.first().prompt).values_list(
            "id", flat=True
        )
    )
    body = {"judge": "openai:gpt-4o-2024-08-06", "completion_ids": ids, "answer": _answer(2)}
    stored = api_as("staff").post("/api/judge-ratings", body)
    assert stored.status_code == 201, stored.content
    judge = Rating.objects.get(pk=stored.json()["rating_ids"][0]).judge
    assert (judge.provider, judge.model) == ("openai", "gpt-4o-2024-08-06")
    with pytest.raises(ValueError, match="OPENAI_API_KEY is not set"):
        judging.judge_launch(judge_config=judge, selection={"source_id": None}, enqueue=False)
    bad = {**body, "judge": "openai:not a model!"}
    assert (
        "not a model name" in _fields(api_as("staff").post("/api/judge-ratings", bad))["body.judge"]
    )


# --- launching jobs with the pages' forms ----------------------------------------------------


def test_staff_launch_generation_with_the_generate_pages_rules(
    api_as, shapes_source, policy, django_capture_on_commit_callbacks
):
    staff = api_as("staff")
    body = {"checkpoint": policy.pk, "source": shapes_source.pk, "limit": 2, "k": 4}
    with django_capture_on_commit_callbacks() as sent:
        launched = staff.post("/api/jobs/generation", body)
    assert launched.status_code == 202, launched.content
    job = Job.objects.get(pk=launched.json()["id"])
    assert (job.kind, job.queue, job.progress_total, len(sent)) == ("generation", "gpu", 2, 1)
    assert job.params["sampling"]["temperature"] == 0.7  # the page's initial value
    errors = _fields(staff.post("/api/jobs/generation", {**body, "k": 0, "temperature": 3}))
    assert errors == {
        "body.k": "Ensure this value is greater than or equal to 1.",
        "body.temperature": "Ensure this value is less than or equal to 2.",
    }
    assert "body.checkpoint" in _fields(
        staff.post("/api/jobs/generation", {**body, "checkpoint": 999})
    )
    # pydantic's type errors are located as the form's are.
    assert list(_fields(staff.post("/api/jobs/generation", {**body, "k": "many"}))) == ["body.k"]
    assert Job.objects.count() == 1
    assert api_as("curator").post("/api/jobs/generation", body).status_code == 403
    # vLLM's tensor parallelism, as the page and `generate --tp` take it.
    split = staff.post(
        "/api/jobs/generation", {**body, "backend": "vllm", "tensor_parallel_size": 2}
    )
    assert split.status_code == 202, split.content
    assert Job.objects.get(pk=split.json()["id"]).params["tensor_parallel_size"] == 2
    refused = staff.post("/api/jobs/generation", {**body, "tensor_parallel_size": 2})
    assert refused.status_code == 400 and "use --backend vllm" in refused.text


def test_staff_launch_judging_and_a_refused_judge_leaves_nothing(api_as, rated_world, settings):
    staff = api_as("staff")
    settings.OPENAI_API_KEY = ""
    refused = staff.post("/api/jobs/judging", {"judge": "openai:gpt-4o"})
    assert "OPENAI_API_KEY" in _fields(refused)["body.judge"]
    assert not JudgeConfig.objects.filter(provider="openai").exists()
    launched = staff.post("/api/jobs/judging", {"judge": "oracle", "k_per_call": 2})
    assert launched.status_code == 202, launched.content
    assert Job.objects.get(pk=launched.json()["id"]).kind == "judging"


def test_staff_launch_training_and_evaluation_through_the_pages_forms(
    api_as, exported, policy, tmp_path
):
    staff = api_as("staff")
    errors = _fields(
        staff.post("/api/jobs/training", {"recipe": "dpo", "base_checkpoint": policy.pk})
    )
    assert set(errors) == {"body.dataset_version"}
    bad_override = {
        "recipe": "dpo",
        "dataset_version": exported.pk,
        "base_checkpoint": policy.pk,
        "overrides": "learning_rate 1e-5",
    }
    assert "key=value" in _fields(staff.post("/api/jobs/training", bad_override))["body.overrides"]
    # What the service refuses after the form (here: an empty version) is a 400 as well.
    empty = {**bad_override, "overrides": ""}
    assert "no training rows" in _fields(staff.post("/api/jobs/training", empty))["body"]
    errors = _fields(staff.post("/api/jobs/evaluation", {"checkpoint": policy.pk, "task": "nope"}))
    assert set(errors) == {"body.task", "body.data"}
    assert Job.objects.count() == 0


# --- prompts ---------------------------------------------------------------------------------


def test_staff_launch_a_lab_with_the_labs_pages_fields(api_as):
    from training.models import LabRun

    staff = api_as("staff")
    launched = staff.post("/api/jobs/lab", {"methods": ["dpo", "kto"], "steps": 5, "seed": 3})
    assert launched.status_code == 202, launched.content
    lab = LabRun.objects.get(job_id=launched.json()["id"])
    assert (lab.job.kind, lab.config["methods"], lab.config["steps"]) == ("lab", ["dpo", "kto"], 5)
    errors = _fields(staff.post("/api/jobs/lab", {"methods": ["nope"], "steps": 0}))
    assert set(errors) == {"body.methods", "body.steps"}
    assert LabRun.objects.count() == 1
    assert api_as("curator").post("/api/jobs/lab", {}).status_code == 403


def test_a_curator_imports_prompts_through_the_import_pages_form(api_as):
    curator = api_as("curator")
    rows = b'{"question": "What colour is the sky?"}\n'
    files = {"file": ContentFile(rows, name="prompts.jsonl")}
    queued = curator.post("/api/prompts/import", {"source": "api-set"}, files=files)
    assert queued.status_code == 202, queued.content
    job = Job.objects.get(pk=queued.json()["id"])
    assert (job.kind, job.params["source"], job.params["format"]) == (
        "import",
        "api-set",
        "prompts",
    )
    wrong = {"file": ContentFile(b"x", name="prompts.txt")}
    errors = _fields(curator.post("/api/prompts/import", {"source": "bad name/"}, files=wrong))
    assert set(errors) == {"body.file", "body.source"}
    assert Job.objects.count() == 1
    assert (
        api_as("annotator").post("/api/prompts/import", {"source": "x"}, files=files).status_code
        == 403
    )


def test_curators_list_prompts_with_their_ground_truth(api_as, shapes_source):
    listing = api_as("curator").get("/api/prompts", source="sqa", page_size=2).json()
    assert listing["count"] == 6 and len(listing["items"]) == 2
    first = listing["items"][0]
    assert first["source"] == "sqa" and first["images"][0].startswith("/api/files/images/")
    assert "answer_index" in first


def test_curators_create_campaigns_and_build_versions_with_the_pages_forms(api_as, rated_world):
    curator = api_as("curator")
    created = curator.post("/api/campaigns", {"name": "api-made", "overlap": 2})
    assert created.status_code == 201, created.content
    assert (created.json()["item_count"], created.json()["overlap"]) == (6, 2)
    listed = {c["name"]: c for c in curator.get("/api/campaigns").json()["items"]}
    assert listed["api-made"]["item_count"] == 6 and listed["api-made"]["my_done"] == 0
    assert "body.overlap" in _fields(curator.post("/api/campaigns", {"name": "x", "overlap": 0}))
    errors = _fields(
        curator.post("/api/versions", {"name": "bad/name", "strategy": "nope", "params": "{"})
    )
    assert set(errors) == {"body.name", "body.strategy", "body.params"}
    # Nothing is rated yet: the service's refusal is a 400 too, and nothing is built.
    none = _fields(curator.post("/api/versions", {"name": "pairs", "strategy": "best_vs_worst"}))
    assert "makes no rows" in none["body"]
    assert not DatasetVersion.objects.exists()
