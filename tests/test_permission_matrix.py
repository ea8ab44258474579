"""Every URL of the project, every persona, one table.

The resolver is walked, so a new URL pattern without a row here fails the test: a page
cannot leak by omission. Each row gives the status code per persona for GET and, where the
view takes it, for an empty POST. Anonymous users are always sent to the login page (a
302 to /login/), except on the login page itself.

The REST API (/api/) has its own table: its personas send a token, not a session, and an
anonymous request gets a JSON 401 instead of the login page.
"""

from __future__ import annotations

import json

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from annotation.models import Completion, JudgeConfig
from annotation.services import campaigns
from api.services import api_token_create
from datasets_app.models import DatasetVersion
from datasets_app.services import exports
from training.models import Checkpoint, EvaluationRun, LabRun, LoopRun, TrainingJob
from workers.jobs import job_create
from workers.models import Job

pytestmark = pytest.mark.django_db

PERSONAS = ("anonymous", "outsider", "annotator", "curator", "staff")
LOGIN = "login"  # a 302 to the login page


def row(outsider, annotator, curator, staff, *, anonymous=LOGIN):
    return dict(zip(PERSONAS, (anonymous, outsider, annotator, curator, staff), strict=True))


EVERYONE = row(200, 200, 200, 200)
ANNOTATORS = row(403, 200, 200, 200)
CURATORS = row(403, 403, 200, 200)
STAFF = row(403, 403, 403, 200)


def staff_then(code):
    return row(403, 403, 403, code)


def curators_then(code):
    return row(403, 403, code, code)


# (url name, case): (kwargs builder key, GET row, POST row or None for a GET-only view).
# A case tells apart several objects behind one pattern (whose file, whose job).
TABLE: dict[tuple[str, str], tuple[str, dict, dict | None]] = {
    ("home", ""): ("", EVERYONE, None),
    ("login", ""): ("", row(200, 200, 200, 200, anonymous=200), None),
    # Logging out is a POST; it ends on the login page.
    ("logout", ""): ("", row(405, 405, 405, 405), row(LOGIN, LOGIN, LOGIN, LOGIN)),
    # Media: the same rules as the pages (config.media).
    ("media", "image of the annotator's item"): ("image_mine", row(404, 200, 200, 200), None),
    ("media", "image of another prompt"): ("image_other", row(404, 404, 200, 200), None),
    ("media", "export"): ("export_file", CURATORS, None),
    ("media", "curator's import report"): ("report_curator", row(404, 404, 200, 200), None),
    ("media", "upload"): ("upload_file", STAFF, None),
    ("media", "folder"): ("folder", row(403, 403, 404, 404), None),
    # Operations
    ("workers:status", ""): ("", STAFF, None),
    ("workers:selftest", ""): ("", staff_then(405), staff_then(302)),
    ("workers:job", "curator's export job"): ("job", row(403, 403, 200, 200), None),
    ("workers:job_progress", "curator's export job"): ("job", row(403, 403, 200, 200), None),
    ("workers:job_cancel", "curator's export job"): (
        "job",
        row(405, 405, 405, 405),
        row(403, 403, 302, 302),
    ),
    ("workers:job_resume", "curator's export job"): (
        "job",
        row(405, 405, 405, 405),
        row(403, 403, 302, 302),
    ),
    # Data
    ("datasets_app:prompts", ""): ("", CURATORS, None),
    ("datasets_app:prompt", ""): ("prompt", CURATORS, None),
    ("datasets_app:import", ""): ("", CURATORS, curators_then(200)),
    ("datasets_app:versions", ""): ("", CURATORS, None),
    ("datasets_app:version_new", ""): ("", CURATORS, curators_then(200)),
    ("datasets_app:version", ""): ("version", CURATORS, None),
    ("datasets_app:version_export", ""): ("version", curators_then(405), curators_then(302)),
    ("datasets_app:version_diff", ""): ("versions", CURATORS, None),
    # Training and evaluation: staff
    ("training:generate", ""): ("", STAFF, staff_then(200)),
    ("training:generate_estimate", ""): ("", STAFF, None),
    ("training:trainings", ""): ("", STAFF, None),
    ("training:training_new", ""): ("", STAFF, staff_then(200)),
    ("training:training", ""): ("training", STAFF, None),
    ("training:training_live", ""): ("training", STAFF, None),
    ("training:evaluations", ""): ("", STAFF, None),
    ("training:evaluation", ""): ("evaluation", STAFF, None),
    ("training:evaluation_live", ""): ("evaluation", STAFF, None),
    ("training:compare", ""): ("", STAFF, None),
    ("training:loops", ""): ("", STAFF, None),
    ("training:loop", ""): ("loop", STAFF, None),
    ("training:labs", ""): ("", STAFF, staff_then(200)),
    ("training:lab", ""): ("lab", STAFF, None),
    ("training:lab_live", ""): ("lab", STAFF, None),
    # A lab that did not fail has nothing to resume: the page says so (a redirect to it).
    ("training:lab_resume", ""): ("lab", staff_then(405), staff_then(302)),
    # Annotation
    ("annotation:campaigns", ""): ("", ANNOTATORS, None),
    ("annotation:campaign_new", ""): ("", CURATORS, curators_then(200)),
    ("annotation:next", ""): ("campaign", row(403, 302, 302, 302), None),
    ("annotation:undo", ""): ("campaign", row(403, 302, 302, 302), None),
    ("annotation:review", ""): ("campaign", CURATORS, None),
    ("annotation:item", "the annotator's assignment"): (
        "assignment",
        row(403, 200, 404, 404),
        None,
    ),
    ("annotation:submit", "the annotator's assignment"): (
        "assignment",
        row(403, 405, 405, 405),
        row(403, 400, 404, 404),
    ),
    ("annotation:release", "the annotator's assignment"): (
        "assignment",
        row(403, 405, 405, 405),
        row(403, 302, 404, 404),
    ),
    ("annotation:review_item", ""): ("campaign_item", CURATORS, curators_then(200)),
    ("annotation:agreement", ""): ("", CURATORS, None),
    ("annotation:analytics", ""): ("", CURATORS, None),
    ("annotation:judge", ""): ("", STAFF, staff_then(200)),
    ("annotation:judges", ""): ("", STAFF, None),
    ("annotation:judge_detail", ""): ("judge", STAFF, None),
    # API tokens: anyone logged in holds their own (a token has only its user's roles).
    ("account:tokens", ""): ("", EVERYONE, EVERYONE),
    # Someone else's or an unknown prefix revokes nothing: back to the page with a message.
    ("account:token_revoke", ""): ("token", row(405, 405, 405, 405), row(302, 302, 302, 302)),
}

# The admin hides itself from everyone who is not Django staff (config.middleware); none of
# the personas is. Every admin URL is checked against this row.
ADMIN = row(404, 404, 404, 404, anonymous=LOGIN)
ADMIN_LOGIN = "admin login"  # a 302 to the admin's own login page
# The admin's own views (not the model pages) send anonymous users to its login page.
ADMIN_ROWS = {
    "admin:login": row(404, 404, 404, 404, anonymous=200),
    **{
        f"admin:{name}": row(404, 404, 404, 404, anonymous=ADMIN_LOGIN)
        for name in (
            "index",
            "logout",
            "password_change",
            "password_change_done",
            "autocomplete",
            "jsi18n",
            "view_on_site",
            "app_list",
            # unnamed: the per-model redirects of old change URLs and the catch-all
            "<unnamed>",
        )
    },
}


def _patterns(resolver: URLResolver, prefix: str = "") -> list[tuple[str, URLPattern]]:
    found = []
    for entry in resolver.url_patterns:
        if isinstance(entry, URLResolver):
            namespace = f"{prefix}{entry.namespace}:" if entry.namespace else prefix
            found.extend(_patterns(entry, namespace))
        elif entry.name:
            found.append((f"{prefix}{entry.name}", entry))
        else:
            found.append((f"{prefix}<unnamed {entry.pattern}>", entry))
    return found


ALL_PATTERNS = _patterns(get_resolver())


def test_every_url_pattern_has_a_row():
    named = {name for name, _ in ALL_PATTERNS if not name.startswith(("admin:", "api:"))}
    in_table = {name for name, _ in TABLE}
    assert sorted(named - in_table) == [], "URL patterns without a row in the permission table"
    assert sorted(in_table - named) == [], "rows for URL patterns that no longer exist"


@pytest.fixture
def world(shapes_source, make_user):
    """One of each object a URL can name, owned the way the table assumes."""
    personas = {
        "outsider": make_user("olly"),
        "annotator": make_user("anna", role="annotator"),
        "curator": make_user("curt", role="curator"),
        "staff": make_user("stella", role="staff"),
    }
    checkpoint = Checkpoint.objects.create(name="policy", model_path="x")
    prompts = list(shapes_source.prompts.order_by("pk"))
    Completion.objects.bulk_create(
        Completion(prompt=p, checkpoint=checkpoint, text=f"answer {i}", sample_index=i)
        for p in prompts[:1]
        for i in range(2)
    )
    campaign = campaigns.campaign_create(
        name="matrix", selection={"source_id": shapes_source.pk}, overlap=1
    )
    assignment = campaigns.assignment_next(campaign=campaign, user=personas["annotator"])
    version = DatasetVersion.objects.create(
        name="pairs", kind="dpo", status="ready", strategy="best_vs_worst"
    )
    other = DatasetVersion.objects.create(
        name="pairs", version=2, kind="dpo", status="ready", strategy="best_vs_worst"
    )
    job = exports.export_enqueue(version=version, user=personas["curator"])
    training = TrainingJob.objects.create(
        name="run",
        recipe="dpo",
        base_checkpoint=checkpoint,
        dataset_version=version,
        config={},
        job=job_create(kind=Job.Kind.TRAINING, title="t", queue="gpu"),
    )
    evaluation = EvaluationRun.objects.create(
        checkpoint=checkpoint, task="scienceqa", job=job_create(kind=Job.Kind.EVALUATION, title="e")
    )
    export_file = default_storage.save("exports/pairs/v1-x/train.parquet", ContentFile(b"P"))
    version.export_path = "exports/pairs/v1-x"
    version.save(update_fields=["export_path"])
    report = default_storage.save(
        f"import-reports/{personas['curator'].pk}/bad.json", ContentFile(b"{}")
    )
    args = {
        "": {},
        "image_mine": {"path": prompts[0].image.name},
        "image_other": {"path": prompts[1].image.name},
        "export_file": {"path": export_file},
        "report_curator": {"path": report},
        "upload_file": {"path": default_storage.save("uploads/u/p.jsonl", ContentFile(b"{}"))},
        "folder": {"path": "exports/pairs/v1-x"},
        "job": {"job_id": job.pk},
        "prompt": {"prompt_id": prompts[0].pk},
        "version": {"version_id": version.pk},
        "versions": {"version_id": other.pk, "other_id": version.pk},
        "training": {"training_id": training.pk},
        "evaluation": {"run_id": evaluation.pk},
        "loop": {"loop_id": LoopRun.objects.create(tag="loop-matrix").pk},
        "lab": {"lab_id": LabRun.objects.create(tag="lab-matrix").pk},
        "judge": {"judge_id": JudgeConfig.objects.create(name="oracle", provider="oracle").pk},
        "campaign": {"campaign_id": campaign.pk},
        "campaign_item": {"item_id": assignment.item_id},
        "assignment": {"assignment_id": assignment.pk},
        "token": {"prefix": "deadbeef"},
        "version_file": {"version_id": version.pk, "name": "train.parquet"},
    }
    return personas, args


def _outcome(response) -> int | str:
    if response.status_code == 302 and response["Location"].startswith("/login/"):
        return LOGIN
    if response.status_code == 302 and response["Location"].startswith("/admin/login/"):
        return ADMIN_LOGIN
    return response.status_code


def _client(personas: dict, persona: str) -> Client:
    client = Client(raise_request_exception=False)
    if persona != "anonymous":
        client.force_login(personas[persona])
    return client


def test_every_url_answers_each_persona_as_the_table_says(world):
    personas, args = world
    wrong = []
    for (name, case), (key, get_row, post_row) in TABLE.items():
        url = reverse(name, kwargs=args[key])
        for persona in PERSONAS:
            # A fresh session each time: a POST to logout must not log out the next request.
            got = _outcome(_client(personas, persona).get(url))
            if got != get_row[persona]:
                wrong.append(f"GET {name} [{case}] as {persona}: {got}, table {get_row[persona]}")
            if post_row is None:
                continue
            got = _outcome(_client(personas, persona).post(url))
            if got != post_row[persona]:
                wrong.append(f"POST {name} [{case}] as {persona}: {got}, table {post_row[persona]}")
    assert wrong == [], "\n".join(wrong)


ADMIN_ARGS = {"object_id": "1", "app_label": "auth", "content_type_id": "1", "id": "1"}


def _admin_url(pattern: URLPattern, name: str) -> str:
    if name.startswith("admin:<unnamed"):  # the admin's catch-all: any unknown admin path
        return "/admin/no-such-page/"
    kwargs = {k: ADMIN_ARGS.get(k, "x") for k in pattern.pattern.regex.groupindex}
    return reverse(name, kwargs=kwargs)


def test_every_admin_url_hides_from_the_personas(world):
    personas, _ = world
    clients = {p: _client(personas, p) for p in PERSONAS}
    admin = [(name, p) for name, p in ALL_PATTERNS if name.startswith("admin:")]
    assert len(admin) > 50  # every registered model's pages, not just the index
    wrong = []
    for name, pattern in admin:
        url = _admin_url(pattern, name)
        for persona in PERSONAS:
            got = _outcome(clients[persona].get(url))
            key = "admin:<unnamed>" if name.startswith("admin:<unnamed") else name
            want = ADMIN_ROWS.get(key, ADMIN)[persona]
            if got != want:
                wrong.append(f"GET {url} as {persona}: {got}, table {want}")
    assert wrong == [], "\n".join(wrong)


# --- the REST API: the same rules, asked with each persona's token --------------------------

UNAUTHORIZED = 401  # the API's answer to no token, or an unknown or revoked one


def api_row(outsider, annotator, curator, staff, *, anonymous=UNAUTHORIZED):
    return row(outsider, annotator, curator, staff, anonymous=anonymous)


API_CURATORS = api_row(403, 403, 200, 200)
API_STAFF = api_row(403, 403, 403, 200)

# (url name, case): (kwargs builder key, method, row). A POST sends an empty JSON object, so
# the roles allowed in get the endpoint's 400 for the missing fields.
API_TABLE: dict[tuple[str, str], tuple[str, str, dict]] = {
    # The schema and the docs are public: they describe the API, they hold no data.
    ("api:openapi-json", ""): ("", "GET", api_row(200, 200, 200, 200, anonymous=200)),
    ("api:openapi-view", ""): ("", "GET", api_row(200, 200, 200, 200, anonymous=200)),
    ("api:api-root", ""): ("", "GET", api_row(404, 404, 404, 404, anonymous=404)),
    # Data: as the import and prompts pages (curators); files as the media view.
    ("api:prompts_import", ""): ("", "POST", api_row(403, 403, 400, 400)),
    ("api:prompts", ""): ("", "GET", API_CURATORS),
    ("api:completions", ""): ("", "POST", api_row(403, 403, 400, 400)),
    ("api:file", "export"): ("export_file", "GET", API_CURATORS),
    ("api:file", "image of the annotator's item"): (
        "image_mine",
        "GET",
        api_row(404, 200, 200, 200),
    ),
    ("api:file", "image of another prompt"): ("image_other", "GET", api_row(404, 404, 200, 200)),
    # Ratings: annotators through their own assignments (others' are a 404); judges: staff.
    ("api:campaigns", ""): ("", "GET", api_row(403, 200, 200, 200)),
    ("api:campaign_new", ""): ("", "POST", api_row(403, 403, 400, 400)),
    # The matrix campaign has one item, held by the annotator: nothing left for the others.
    ("api:campaign_next", ""): ("campaign", "POST", api_row(403, 200, 204, 204)),
    ("api:assignment", "the annotator's assignment"): (
        "assignment",
        "GET",
        api_row(403, 200, 404, 404),
    ),
    ("api:assignment_submit", "the annotator's assignment"): (
        "assignment",
        "POST",
        api_row(403, 400, 404, 404),
    ),
    ("api:judges", ""): ("", "GET", API_STAFF),
    ("api:judge_ratings", ""): ("", "POST", api_row(403, 403, 403, 400)),
    # Dataset versions: curators, as the Datasets pages; the download as the media view.
    ("api:versions", ""): ("", "GET", API_CURATORS),
    ("api:version_new", ""): ("", "POST", api_row(403, 403, 400, 400)),
    ("api:version", ""): ("version", "GET", API_CURATORS),
    ("api:version_export", ""): ("version", "POST", api_row(403, 403, 202, 202)),
    ("api:version_file", ""): ("version_file", "GET", API_CURATORS),
    # Jobs: the job page's rule (staff, or who started it); launches: staff, as the pages.
    ("api:job", "curator's export job"): ("job", "GET", api_row(403, 403, 200, 200)),
    ("api:job_cancel", "curator's export job"): ("job", "POST", api_row(403, 403, 202, 202)),
    ("api:launch_generation", ""): ("", "POST", api_row(403, 403, 403, 400)),
    # Every field of the Judge page has a default: an empty body launches the oracle.
    ("api:launch_judging", ""): ("", "POST", api_row(403, 403, 403, 202)),
    ("api:launch_training", ""): ("", "POST", api_row(403, 403, 403, 400)),
    ("api:launch_evaluation", ""): ("", "POST", api_row(403, 403, 403, 400)),
    # The Labs page's fields all have defaults too: an empty body launches the default lab.
    ("api:launch_lab", ""): ("", "POST", api_row(403, 403, 403, 202)),
}


def test_every_api_url_pattern_has_a_row():
    named = {name for name, _ in ALL_PATTERNS if name.startswith("api:")}
    in_table = {name for name, _ in API_TABLE}
    assert len(named) > 20
    assert sorted(named - in_table) == [], "API URLs without a row in the API table"
    assert sorted(in_table - named) == [], "rows for API URLs that no longer exist"


def test_every_api_url_answers_each_persona_as_the_table_says(world):
    personas, args = world
    tokens = {p: api_token_create(user=user)[1] for p, user in personas.items()}
    wrong = []
    for (name, case), (key, method, want) in API_TABLE.items():
        url = reverse(name, kwargs=args[key])
        for persona in PERSONAS:
            headers = {"Authorization": f"Bearer {tokens[persona]}"} if persona in tokens else {}
            client = Client(raise_request_exception=False)
            if method == "GET":
                response = client.get(url, headers=headers)
            else:
                response = client.post(
                    url, json.dumps({}), content_type="application/json", headers=headers
                )
            got = response.status_code
            if got != want[persona]:
                wrong.append(f"{method} {name} [{case}] as {persona}: {got}, table {want[persona]}")
            elif got in (401, 403):  # JSON for a script, never a login page
                assert response["Content-Type"] == "application/json; charset=utf-8", name
    assert wrong == [], "\n".join(wrong)
