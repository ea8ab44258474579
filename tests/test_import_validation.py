"""Pure checks of the import core: every kind of bad input is named, row by row."""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib

import pytest
from PIL import Image

from datasets_app.core.imports import ImageLimits, ImageRejected, parse_source, validate_image
from tests.conftest import png_bytes

LIMITS = ImageLimits(max_bytes=1_000_000, max_pixels=1_000_000)


def bomb_png(width: int = 60_000, height: int = 60_000) -> bytes:
    """A valid small PNG whose header claims a huge canvas (what a bomb looks like)."""
    data = bytearray(png_bytes((8, 8)))
    ihdr = 8 + 8  # signature, then length + type of the IHDR chunk
    data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[12 : ihdr + 13]))
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


def test_valid_png_is_accepted_with_its_size_and_hash():
    image = validate_image(png_bytes((20, 10)), LIMITS)
    assert (image.width, image.height, image.format) == (20, 10, "PNG")
    assert image.storage_name.startswith(f"images/{image.sha256[:2]}/")


def test_truncated_image_is_rejected():
    buffer = io.BytesIO()
    Image.effect_noise((64, 64), 50).convert("RGB").save(buffer, "JPEG")
    with pytest.raises(ImageRejected, match="broken image"):
        validate_image(buffer.getvalue()[:600], LIMITS)


def test_decompression_bomb_is_rejected_before_decoding():
    with pytest.raises(ImageRejected, match="decompression bomb"):
        validate_image(bomb_png(), LIMITS)


def test_non_image_is_rejected():
    with pytest.raises(ImageRejected, match="not an image"):
        validate_image(b"%PDF-1.4 not a picture", LIMITS)


def test_oversized_file_is_rejected():
    with pytest.raises(ImageRejected, match="limit is 20"):
        validate_image(png_bytes(), ImageLimits(max_bytes=20, max_pixels=10_000))


def test_disallowed_format_is_rejected():
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "TIFF")
    with pytest.raises(ImageRejected, match="TIFF is not one of"):
        validate_image(buffer.getvalue(), LIMITS)


def _write_jsonl(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_jsonl_rows_report_each_problem_with_its_row(tmp_path):
    (tmp_path / "a.png").write_bytes(png_bytes())
    (tmp_path / "bomb.png").write_bytes(bomb_png())
    good_b64 = base64.b64encode(png_bytes(colour="blue")).decode()
    path = _write_jsonl(
        tmp_path / "prompts.jsonl",
        [
            json.dumps({"image": "a.png", "question": "What colour?"}),
            '{"image": "a.png", "question": ',
            json.dumps({"image": "a.png"}),
            json.dumps({"image": "bomb.png", "question": "Big?"}),
            json.dumps({"image": "../etc/passwd", "question": "Escape?"}),
            json.dumps({"image": {"bytes": good_b64}, "question": "Inline?", "split": "val"}),
            json.dumps({"image": "a.png", "question": "Q", "choices": ["x"], "answer_index": 3}),
        ],
    )
    result = parse_source(path, "prompts", LIMITS)
    assert result.rows_total == 7
    assert [r.row for r in result.records] == [1, 6]
    assert result.records[1].split == "validation"
    errors = {e.row: e for e in result.errors}
    assert "invalid JSON" in errors[2].error
    assert errors[3].field == "question" and "missing required field" in errors[3].error
    assert errors[4].field == "image" and "decompression bomb" in errors[4].error
    assert "outside the imported folder" in errors[5].error
    assert "outside the 1 choices" in errors[7].error


def test_image_folder_with_csv_manifest(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "one.png").write_bytes(png_bytes())
    (tmp_path / "manifest.csv").write_text(
        'image,question,choices,answer_index,subject\nimg/one.png,Which?,"[""a"", ""b""]",1,art\n'
    )
    result = parse_source(tmp_path, "prompts", LIMITS)
    assert not result.errors
    (record,) = result.records
    assert record.choices == ["a", "b"] and record.answer_index == 1 and record.subject == "art"


def test_folder_without_manifest_is_a_file_level_error(tmp_path):
    with pytest.raises(ValueError, match="without manifest"):
        parse_source(tmp_path, "prompts", LIMITS)


def test_content_hash_ignores_row_order_but_not_content(tmp_path):
    (tmp_path / "a.png").write_bytes(png_bytes())
    path = _write_jsonl(
        tmp_path / "p.jsonl",
        [
            json.dumps({"image": "a.png", "question": "Q1"}),
            json.dumps({"image": "a.png", "question": "Q2"}),
            json.dumps({"image": "a.png", "question": "Q1"}),
        ],
    )
    records = parse_source(path, "prompts", LIMITS).records
    assert records[0].content_hash == records[2].content_hash != records[1].content_hash


def test_pope_answer_must_be_yes_or_no(tmp_path):
    (tmp_path / "a.png").write_bytes(png_bytes())
    path = _write_jsonl(
        tmp_path / "pope.jsonl",
        [
            json.dumps({"image": "a.png", "question": "Is there a cat?", "answer": "Yes"}),
            json.dumps({"image": "a.png", "question": "Is there a dog?", "answer": "maybe"}),
        ],
    )
    result = parse_source(path, "pope", LIMITS)
    assert result.records[0].reference_answer == "yes" and result.records[0].split == "test"
    assert result.errors[0].row == 2 and "'yes' or 'no'" in result.errors[0].error


def test_nul_characters_are_refused_because_postgresql_cannot_store_them(tmp_path):
    (tmp_path / "a.png").write_bytes(png_bytes())
    path = _write_jsonl(
        tmp_path / "p.jsonl",
        [
            json.dumps({"image": "a.png", "question": "bad\u0000question"}),
            json.dumps({"image": "a.png", "question": "ok", "note": "bad\u0000note"}),
        ],
    )
    result = parse_source(path, "prompts", LIMITS)
    assert [(e.row, e.field) for e in result.errors] == [(1, "question"), (2, "metadata")]


def _jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "green").save(buffer, "JPEG")
    return buffer.getvalue()


def test_plain_base64_text_in_image_is_read_as_the_image(tmp_path):
    png, jpeg = png_bytes(colour="blue"), _jpeg_bytes()
    # JPEG's base64 starts with "/9j/": it must not be taken for an absolute path.
    assert base64.b64encode(jpeg).decode().startswith("/9j/")
    wrapped = base64.encodebytes(png).decode()  # MIME style, with line breaks
    path = _write_jsonl(
        tmp_path / "inline.jsonl",
        [
            json.dumps({"image": base64.b64encode(png).decode(), "question": "PNG?"}),
            json.dumps({"image": base64.b64encode(jpeg).decode(), "question": "JPEG?"}),
            json.dumps({"image": wrapped, "question": "Wrapped?"}),
        ],
    )
    result = parse_source(path, "prompts", LIMITS)
    assert not result.errors
    assert [r.image.format for r in result.records] == ["PNG", "JPEG", "PNG"]
    assert result.records[0].image.data == png


def test_a_path_stays_a_path_and_a_missing_one_says_so(tmp_path):
    # "abcdEFGH12345678" is valid base64 (of noise): as an existing file it is that file.
    (tmp_path / "abcdEFGH12345678").write_bytes(png_bytes(colour="red"))
    not_an_image = base64.b64encode(b"just some text, long enough").decode()
    path = _write_jsonl(
        tmp_path / "paths.jsonl",
        [
            json.dumps({"image": "abcdEFGH12345678", "question": "File?"}),
            json.dumps({"image": "photos/missing", "question": "Missing?"}),
            json.dumps({"image": not_an_image, "question": "Text?"}),
            json.dumps({"image": "A" * 5000, "question": "Too long for a file name?"}),
        ],
    )
    result = parse_source(path, "prompts", LIMITS)
    assert [r.row for r in result.records] == [1]
    assert result.records[0].image.data == png_bytes(colour="red")
    errors = {e.row: e.error for e in result.errors}
    assert set(errors) == {2, 3, 4}
    for error in errors.values():
        assert "neither a file next to the imported file nor base64 of an image" in error
    assert len(errors[4]) < 200  # the value is shortened, not copied whole


def test_binary_jsonl_names_the_row_that_is_not_utf8(tmp_path):
    (tmp_path / "a.png").write_bytes(png_bytes())
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(
        json.dumps({"image": "a.png", "question": "Fine?"}).encode()
        + b"\n"
        + b'{"image": "a.png", "question": "caf\xe9"}\n'
    )
    result = parse_source(path, "prompts", LIMITS)
    assert [r.row for r in result.records] == [1]
    (error,) = result.errors
    assert error.row == 2 and "not UTF-8 text (byte 0xe9 at column 36)" in error.error

    binary = tmp_path / "picture.jsonl"
    binary.write_bytes(png_bytes())  # a PNG renamed: starts with byte 0x89
    result = parse_source(binary, "prompts", LIMITS)
    assert not result.records and result.errors[0].row == 1
    assert "not UTF-8 text (byte 0x89 at column 1)" in str(result.errors[0])


def test_a_csv_manifest_that_is_not_utf8_names_its_line(tmp_path):
    (tmp_path / "one.png").write_bytes(png_bytes())
    (tmp_path / "manifest.csv").write_bytes(b"image,question\none.png,Which?\none.png,Caf\xe9?\n")
    with pytest.raises(ValueError, match=r"manifest.csv, line 3: not UTF-8 text \(byte 0xe9"):
        parse_source(tmp_path, "prompts", LIMITS)


def test_a_utf8_bom_is_not_part_of_the_first_column(tmp_path):
    (tmp_path / "one.png").write_bytes(png_bytes())
    (tmp_path / "manifest.csv").write_bytes(b"\xef\xbb\xbfimage,question\none.png,Which?\n")
    result = parse_source(tmp_path, "prompts", LIMITS)
    assert not result.errors and result.records[0].question == "Which?"
