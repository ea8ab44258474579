"""Annotation under load: 100,000 prompts x 4 completions, then 20 annotators at once.

1. Server time and query count of the two hot requests (next item, submit), measured
   in-process through the whole Django stack, with a small campaign and with the big one:
   the query count must not grow with the data.
2. 20 annotator threads against a live HTTP server on 127.0.0.1, each looping
   next -> item page -> submit until 2,000 items are submitted in all; then the database is
   checked: every accepted submission stored once, none lost, no item over its overlap.

    .venv/bin/python benchmarks/annotation_load.py [--prompts 100000] [--database-url URL]

Prints one JSON line. Uses a throw-away SQLite database unless --database-url is given
(it must point at an empty PostgreSQL database you can drop).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _setup(var_dir: str, database_url: str) -> None:
    os.environ.update(
        VAR_DIR=var_dir,
        DATABASE_URL=database_url,
        REDIS_URL="",
        DJANGO_SETTINGS_MODULE="config.settings",
        LOG_LEVEL="ERROR",
        ANNOTATION_MAX_SUBMITS_PER_MINUTE="100000",
        ALLOWED_HOSTS="127.0.0.1,localhost,testserver",
    )
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def _make_prompts(n: int, k: int, tag: str) -> int:
    from annotation.models import Completion
    from datasets_app.models import Prompt, Source
    from training.models import Checkpoint

    source = Source.objects.create(name=f"load-{tag}", kind="prompts")
    checkpoint, _ = Checkpoint.objects.get_or_create(name="load", model_path="x")
    batch = 5000
    for start in range(0, n, batch):
        Prompt.objects.bulk_create(
            Prompt(source=source, question=f"Q{i}?", content_hash=f"{tag[:4]}{i:060d}")
            for i in range(start, min(n, start + batch))
        )
    ids = list(source.prompts.values_list("id", flat=True))
    for start in range(0, len(ids), batch // k):
        Completion.objects.bulk_create(
            Completion(
                prompt_id=pid, checkpoint=checkpoint, text=f"answer {j} to {pid}", sample_index=j
            )
            for pid in ids[start : start + batch // k]
            for j in range(k)
        )
    return source.pk


def _payload(item_completion_ids: list[int]) -> dict:
    from annotation.core.judges.base import ATTRIBUTES

    return {
        "scores": {str(c): dict.fromkeys(ATTRIBUTES, 2) for c in item_completion_ids},
        "best": item_completion_ids[0],
        "worst": item_completion_ids[-1],
        "comment": "",
        "token": uuid.uuid4().hex,
    }


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50_ms": round(1000 * statistics.median(ordered), 2),
        "p95_ms": round(1000 * ordered[int(0.95 * (len(ordered) - 1))], 2),
    }


def _in_process(campaign, user, rounds: int) -> dict:
    """Next-item, the item page and submit through Django's test client: server time and
    queries."""
    from django.db import connection, reset_queries
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from annotation.models import Assignment

    client = Client()
    client.force_login(user)
    timings: dict[str, list[float]] = {"next": [], "page": [], "submit": []}
    queries: dict[str, set[int]] = {"next": set(), "page": set(), "submit": set()}
    for _ in range(rounds):
        reset_queries()
        with CaptureQueriesContext(connection) as q:
            start = time.perf_counter()
            response = client.get(f"/annotate/campaigns/{campaign.pk}/next/")
            timings["next"].append(time.perf_counter() - start)
        queries["next"].add(len(q))
        assignment_id = int(response["Location"].rstrip("/").split("/")[-1])
        reset_queries()
        with CaptureQueriesContext(connection) as q:
            start = time.perf_counter()
            page = client.get(f"/annotate/items/{assignment_id}/")
            timings["page"].append(time.perf_counter() - start)
        assert page.status_code == 200
        queries["page"].add(len(q))
        item = Assignment.objects.select_related("item").get(pk=assignment_id).item
        body = json.dumps(_payload(item.completion_ids))
        reset_queries()
        with CaptureQueriesContext(connection) as q:
            start = time.perf_counter()
            response = client.post(
                f"/annotate/items/{assignment_id}/submit/", body, content_type="application/json"
            )
            timings["submit"].append(time.perf_counter() - start)
        assert response.status_code == 200, response.content
        queries["submit"].add(len(q))
    return {
        name: {**_percentiles(timings[name]), "queries": sorted(queries[name])} for name in timings
    }


class _Server:
    def __init__(self) -> None:
        from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler
        from django.core.wsgi import get_wsgi_application

        class Quiet(WSGIRequestHandler):
            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadedWSGIServer(("127.0.0.1", 0), Quiet)
        self.httpd.set_app(get_wsgi_application())
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _session_cookie(user) -> str:
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore

    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    return session.session_key


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def _annotator(base: str, cookie: str, campaign_id: int, budget, stats, lock) -> None:
    opener = urllib.request.build_opener(_NoRedirect)
    csrf = uuid.uuid4().hex  # 32 characters: Django takes it as the unmasked secret
    headers = {"Cookie": f"sessionid={cookie}; csrftoken={csrf}"}

    def call(method: str, path: str, body: bytes | None = None, extra: dict | None = None):
        request = urllib.request.Request(  # noqa: S310 (always http://127.0.0.1)
            base + path, data=body, method=method, headers={**headers, **(extra or {})}
        )
        start = time.perf_counter()
        try:
            response = opener.open(request, timeout=60)
            status, data, location = response.status, response.read(), None
        except urllib.error.HTTPError as exc:
            status, data, location = exc.code, exc.read(), exc.headers.get("Location")
        return status, data, location, time.perf_counter() - start

    while True:
        with lock:
            if budget[0] <= 0:
                return
            budget[0] -= 1
        status, _, location, seconds = call("GET", f"/annotate/campaigns/{campaign_id}/next/")
        stats["next"].append(seconds)
        if status != 302 or "/items/" not in (location or ""):
            with lock:
                stats["errors"].append(f"next: {status} {location}")
            return
        status, page, _, seconds = call("GET", location)
        stats["page"].append(seconds)
        config = page.split(b'id="annotate-config" type="application/json">', 1)[1]
        ids = json.loads(config.split(b"</script>", 1)[0])["completionIds"]
        body = json.dumps(_payload(ids)).encode()
        extra = {"Content-Type": "application/json", "X-CSRFToken": csrf}
        status, data, _, seconds = call("POST", location + "submit/", body, extra)
        stats["submit"].append(seconds)
        with lock:
            if status == 200:
                stats["accepted"].append(location)
            else:
                stats["errors"].append(f"submit: {status} {data[:200]!r}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=100_000)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--annotators", type=int, default=20)
    parser.add_argument("--submissions", type=int, default=2000)
    parser.add_argument("--overlap", type=int, default=2)
    parser.add_argument("--database-url", default="", help="PostgreSQL URL (default SQLite)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as var_dir:
        _setup(var_dir, args.database_url)
        from django.contrib.auth import get_user_model
        from django.contrib.auth.models import Group
        from django.db import connection
        from django.db.models import Count

        from annotation.models import Assignment, CampaignItem, PairPick, Rating
        from annotation.services import campaigns

        started = time.perf_counter()
        small_source = _make_prompts(1000, args.k, "small")
        big_source = _make_prompts(args.prompts, args.k, "big")
        small = campaigns.campaign_create(
            name="small", selection={"source_id": small_source}, overlap=args.overlap
        )
        big = campaigns.campaign_create(
            name="big", selection={"source_id": big_source}, overlap=args.overlap
        )
        setup_s = time.perf_counter() - started
        users = []
        for i in range(args.annotators + 1):
            user = get_user_model().objects.create_user(f"annotator{i}")
            user.groups.add(Group.objects.get(name="annotator"))
            users.append(user)

        in_process = {
            "small_1k": _in_process(small, users[-1], 200),
            f"big_{args.prompts // 1000}k": _in_process(big, users[-1], 200),
        }

        server = _Server()
        base = f"http://127.0.0.1:{server.port}"
        budget, lock = [args.submissions], threading.Lock()
        stats: dict[str, list] = {
            "next": [],
            "page": [],
            "submit": [],
            "accepted": [],
            "errors": [],
        }
        threads = [
            threading.Thread(
                target=_annotator,
                args=(base, _session_cookie(u), big.pk, budget, stats, lock),
            )
            for u in users[: args.annotators]
        ]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - started
        server.stop()

        submitted = Assignment.objects.filter(item__campaign=big, status="submitted")
        over_overlap = CampaignItem.objects.filter(campaign=big, n_active__gt=args.overlap).count()
        per_item_max = (
            submitted.values("item_id").annotate(n=Count("id")).order_by("-n").first() or {}
        ).get("n", 0)
        annotators = users[: args.annotators]
        ratings = Rating.objects.filter(user__in=annotators).count()
        picks = PairPick.objects.filter(annotator__in=annotators).count()
        result = {
            "benchmark": "annotation_load",
            "database": connection.vendor,
            "prompts": args.prompts,
            "completions": args.prompts * args.k,
            "setup_s": round(setup_s, 1),
            "in_process": in_process,
            "concurrent": {
                "annotators": args.annotators,
                "wall_s": round(wall, 2),
                "submissions_per_s": round(len(stats["accepted"]) / wall, 1),
                "next": _percentiles(stats["next"]),
                "item_page": _percentiles(stats["page"]),
                "submit": _percentiles(stats["submit"]),
                "accepted": len(stats["accepted"]),
                "errors": stats["errors"][:5],
            },
            "checks": {
                "submitted_rows": submitted.count(),
                "ratings": ratings,
                "expected_ratings": len(stats["accepted"]) * args.k,
                "pair_picks": picks,
                "lost_or_duplicated": (ratings != len(stats["accepted"]) * args.k)
                or (picks != len(stats["accepted"])),
                "items_over_overlap": over_overlap,
                "max_submissions_per_item": per_item_max,
                "overlap": args.overlap,
            },
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
