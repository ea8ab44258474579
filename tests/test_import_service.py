"""Imports through the service and the command: all-or-nothing, reports, idempotence."""

from __future__ import annotations

import json

import pytest
from django.core.files.storage import default_storage
from django.core.management import CommandError, call_command

from datasets_app.core.shapes import make_shapes
from datasets_app.models import Prompt, Source
from datasets_app.services.imports import ImportRejected, prompts_import
from tests.conftest import png_bytes
from tests.test_import_validation import bomb_png

pytestmark = [pytest.mark.django_db, pytest.mark.db_backend]


def _prompts_file(tmp_path, bad_line: str | None = None):
    (tmp_path / "red.png").write_bytes(png_bytes(colour="red"))
    (tmp_path / "blue.png").write_bytes(png_bytes(colour="blue"))
    lines = [
        json.dumps({"image": "red.png", "question": "What colour is it?", "answer": "red"}),
        json.dumps({"image": "blue.png", "question": "What colour is it?", "topic": "colour"}),
    ]
    if bad_line is not None:
        lines.insert(1, bad_line)
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _bad_image_line(tmp_path, name: str, data: bytes) -> str:
    (tmp_path / name).write_bytes(data)
    return json.dumps({"image": name, "question": "Bad?"})


BAD_ROWS = {
    "truncated image": lambda tmp: _bad_image_line(tmp, "cut.png", png_bytes((64, 64))[:70]),
    "decompression bomb": lambda tmp: _bad_image_line(tmp, "bomb.png", bomb_png()),
    "non-image file": lambda tmp: _bad_image_line(tmp, "notes.png", b"just some text"),
    "bad JSON line": lambda tmp: '{"image": "red.png", "question": "unterminated',
    "missing field": lambda tmp: json.dumps({"image": "red.png"}),
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_bad_row_changes_nothing_and_names_the_row(tmp_path, case):
    path = _prompts_file(tmp_path, BAD_ROWS[case](tmp_path))
    with pytest.raises(ImportRejected) as raised:
        prompts_import(path=path, source_name="colours", fmt="prompts")
    assert Source.objects.count() == 0 and Prompt.objects.count() == 0
    assert [e.row for e in raised.value.parsed.errors] == [2]
    assert "row 2" in str(raised.value)
    report = json.loads(default_storage.open(raised.value.report_name).read())
    assert report["rows_rejected"] == 1 and report["errors"][0]["row"] == 2
    assert not default_storage.exists("images")  # no image stored either


def test_skip_bad_imports_the_rest_and_keeps_the_report(tmp_path):
    path = _prompts_file(tmp_path, BAD_ROWS["missing field"](tmp_path))
    outcome = prompts_import(path=path, source_name="colours", fmt="prompts", skip_bad=True)
    assert outcome.created == 2
    source = Source.objects.get(name="colours")
    assert (source.rows_total, source.rows_imported, source.rows_rejected) == (3, 2, 1)
    assert source.report[0]["row"] == 2 and "question" in source.report[0]["error"]
    red = Prompt.objects.get(reference_answer="red")
    assert red.image.name == f"images/{red.image_sha256[:2]}/{red.image_sha256}.png"
    assert default_storage.open(red.image.name).read() == png_bytes(colour="red")
    assert Prompt.objects.get(reference_answer="").metadata == {"topic": "colour"}


def test_reimporting_the_same_file_adds_nothing(tmp_path):
    path = _prompts_file(tmp_path)
    first = prompts_import(path=path, source_name="colours", fmt="prompts")
    second = prompts_import(path=path, source_name="colours", fmt="prompts")
    assert (first.created, second.created, second.duplicates) == (2, 0, 2)
    assert Prompt.objects.count() == 2


def test_source_kind_cannot_change(tmp_path):
    path = _prompts_file(tmp_path)
    prompts_import(path=path, source_name="colours", fmt="prompts")
    with pytest.raises(ValueError, match="holds prompts prompts"):
        prompts_import(path=path, source_name="colours", fmt="pope")


def test_shapes_files_import_as_scienceqa_and_pope(tmp_path):
    counts = make_shapes(tmp_path / "shapes", n=12, seed=3)
    call_command(
        "import_prompts",
        str(tmp_path / "shapes/scienceqa.parquet"),
        source="sqa",
        format="scienceqa",
    )
    call_command(
        "import_prompts", str(tmp_path / "shapes/pope.parquet"), source="pope", format="pope"
    )
    sqa = Prompt.objects.filter(source__name="sqa")
    assert sqa.count() == counts["scienceqa"]
    assert set(sqa.values_list("subject", flat=True)) == {
        "natural science",
        "social science",
        "language science",
    }
    first = sqa.first()
    assert first.choices and 0 <= first.answer_index < len(first.choices)
    assert "scene" in first.metadata and "solution" in first.metadata
    pope = Prompt.objects.filter(source__name="pope")
    assert pope.count() == counts["pope"]
    assert set(pope.values_list("reference_answer", flat=True)) == {"yes", "no"}
    # The same image appears in several POPE questions and is stored once.
    assert pope.values("image").distinct().count() == 12


def test_command_exits_non_zero_and_prints_rows_on_bad_input(tmp_path, capsys):
    path = _prompts_file(tmp_path, BAD_ROWS["bad JSON line"](tmp_path))
    with pytest.raises(CommandError, match="nothing was imported"):
        call_command("import_prompts", str(path), source="colours")
    assert "row 2" in capsys.readouterr().err
    assert Prompt.objects.count() == 0


def test_skip_bad_with_no_valid_row_fails_and_creates_no_source(tmp_path):
    path = tmp_path / "all-bad.jsonl"
    path.write_text(json.dumps({"image": "gone.png", "question": "Q"}) + "\n{broken\n")
    with pytest.raises(ImportRejected) as raised:
        prompts_import(path=path, source_name="empty", fmt="prompts", skip_bad=True)
    message = str(raised.value)
    assert "none of the 2 rows is valid, so nothing was imported" in message
    assert "skip" not in message.split("Full report")[0].lower()  # skipping cannot help
    assert Source.objects.count() == 0 and Prompt.objects.count() == 0


def test_a_file_without_rows_creates_no_source(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n")
    with pytest.raises(ValueError, match=r"empty\.jsonl has no rows, so nothing was imported"):
        prompts_import(path=path, source_name="empty", fmt="prompts", skip_bad=True)
    assert Source.objects.count() == 0


def test_the_rejection_names_the_callers_own_way_to_skip(tmp_path):
    path = _prompts_file(tmp_path, BAD_ROWS["missing field"](tmp_path))
    with pytest.raises(ImportRejected) as raised:
        prompts_import(path=path, source_name="colours", fmt="prompts")
    assert "--skip-bad" not in str(raised.value)  # the service knows no command line
    assert "Fix them, or press the red button." in raised.value.explain("press the red button")


def test_the_command_names_its_flag_and_refuses_a_binary_jsonl(tmp_path, capsys):
    path = _prompts_file(tmp_path, BAD_ROWS["missing field"](tmp_path))
    with pytest.raises(CommandError, match="pass --skip-bad to import only the valid rows"):
        call_command("import_prompts", str(path), source="colours")
    binary = tmp_path / "photo.jsonl"
    binary.write_bytes(png_bytes())
    with pytest.raises(CommandError, match=r"none of the \d+ rows is valid") as raised:
        call_command("import_prompts", str(binary), source="photo", skip_bad=True)
    assert "row 1: not UTF-8 text (byte 0x89 at column 1)" in str(raised.value)
    assert "codec" not in str(raised.value)
    assert Source.objects.count() == 0


def test_plain_base64_images_import_like_files(tmp_path):
    import base64

    path = tmp_path / "inline.jsonl"
    rows = [
        {"image": base64.b64encode(png_bytes(colour=c)).decode(), "question": c}
        for c in ("red", "green")
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    outcome = prompts_import(path=path, source_name="inline", fmt="prompts")
    assert outcome.created == 2
    red = Prompt.objects.get(question="red")
    assert default_storage.open(red.image.name).read() == png_bytes(colour="red")
