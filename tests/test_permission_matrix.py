"""Every URL of the project, every persona, one table.

The resolver is walked, so a new URL pattern without a row here fails the test: a page
cannot leak by omission. Each row gives the status code per persona for GET and, where the
view takes it, for an empty POST. Anonymous users are always sent to the login page (a
302 to /login/), except on the login page itself.
"""

from __future__ import annotations

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from annotation.models import Completion, JudgeConfig
from annotation.services import campaigns
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
    named = {name for name, _ in ALL_PATTERNS if not name.startswith("admin:")}
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
    report = default_storage.save(
        f"import-reports/{personas['curator'].pk}/bad.json", ContentFile(b"{}")
    )
    args = {
        "": {},
        "image_mine": {"path": prompts[0].image.name},
        "image_other": {"path": prompts[1].image.name},
        "export_file": {
            "path": default_storage.save("exports/pairs/v1-x/train.parquet", ContentFile(b"P"))
        },
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
