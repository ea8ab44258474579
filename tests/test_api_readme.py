"""The README's REST API example, run as it is written against a live server: the code block
is read from README.md, so the two cannot drift. A token comes from `manage.py api_token`,
as the README says; the export job the example queues is run here, as a worker would."""

from __future__ import annotations

import io
import re
import threading
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from django.core.management import call_command
from django.db import connection

from annotation.models import Completion, Rating
from datasets_app.models import DatasetVersion
from datasets_app.services import exports
from workers.models import Job

pytestmark = pytest.mark.django_db(transaction=True)

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_block(section: str, language: str = "python") -> str:
    """The first fenced `language` block under the heading `section` of README.md."""
    text = README.read_text()
    start = text.index(f"\n{section}\n")
    found = re.search(rf"```{language}\n(.*?)```", text[start:], re.DOTALL)
    assert found is not None, f"no {language} block under {section}"
    return found.group(1)


class ExportWorker(threading.Thread):
    """Runs the export jobs that appear, as the default queue's worker would."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            while not self.stop.wait(0.2):
                queued = Job.objects.filter(kind=Job.Kind.EXPORT, status=Job.Status.QUEUED)
                for job_id in queued.values_list("pk", flat=True):
                    exports.export_job_run(job_id=job_id)
        finally:
            connection.close()


def test_the_readme_example_pushes_ratings_and_downloads_a_parquet(
    live_server, shapes_source, make_user, settings, monkeypatch, tmp_path
):
    settings.OPENAI_API_KEY = "sk-test"  # the judge config's check; nothing is called
    make_user("stella", role="staff")
    out = io.StringIO()
    call_command("api_token", "stella", name="readme", stdout=out, stderr=io.StringIO())
    token = out.getvalue().rstrip("\n").splitlines()[-1]
    monkeypatch.setenv("STUDIO_URL", live_server.url)
    monkeypatch.setenv("STUDIO_TOKEN", token)
    monkeypatch.chdir(tmp_path)
    worker = ExportWorker()
    worker.start()
    try:
        code = readme_block("## REST API")
        exec(compile(code, str(README), "exec"), {"__name__": "readme_example"})  # noqa: S102
    finally:
        worker.stop.set()
        worker.join(timeout=30)

    prompts = shapes_source.prompts.count()
    assert Completion.objects.filter(checkpoint__name="our-vlm-v3").count() == 2 * prompts
    assert Rating.objects.filter(judge__model="gpt-4o-mini").count() == 2 * prompts
    version = DatasetVersion.objects.get(name="our-vlm-dpo")
    table = pq.read_table(tmp_path / "train.parquet")
    assert table.num_rows == version.stats["splits"]["train"] > 0
    first = table.slice(0, 1).to_pylist()[0]
    assert first["chosen"][-1]["content"][0]["text"].startswith("The answer is")
