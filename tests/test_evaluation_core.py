"""The evaluation core without Django: loaders, prompts, parsers, metrics worked out by hand,
the runner with scripted answers and judges, the bootstrap, and one run on the tiny model."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from annotation.core.judges.base import (
    CompletionRating,
    InvalidJudgeOutput,
    JudgeItem,
    JudgeResult,
    TextResult,
    Usage,
)
from annotation.core.judges.runner import RunLimits
from datasets_app.core.shapes import make_shapes
from training.core.evaluation import (
    TASKS,
    EvalItem,
    EvaluationError,
    bootstrap_diff,
    evaluate,
    headline_metrics,
    item_scores,
    load_items,
    metric_value,
    render,
    render_review,
    transformers_generate,
)
from training.core.evaluation.parsing import parse_choice, parse_review_scores, parse_yes_no
from training.core.generation.templates import PromptInput, render_prompt

# --- helpers ------------------------------------------------------------------------------------


def _png(colour: str = "red", size: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, "PNG")
    return buffer.getvalue()


def _jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _scripted(answers: dict[str, list[str]], seen: list | None = None):
    """Stands for the policy: fixed answers per item key."""

    def generate(inputs, samples):
        if seen is not None:
            seen.extend(inputs)
        return [answers[key][:samples] for key, _, _ in inputs]

    return generate


def _item(key: str, **fields) -> EvalItem:
    return EvalItem(key=key, question=fields.pop("question", f"question {key}?"), **fields)


# --- parsers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("B", 1),
        ("  b  ", 1),  # lowercase bare letter
        ("B.", 1),
        ("(C)", 2),
        ("B. the red circle", 1),
        ("c. top", 2),
        ("(A) two", 0),
        ("The answer is C", 2),
        ("The answer is (D).", 3),
        ("the answer is b.", 1),
        ("Draft: the answer is A. On reflection the answer is C.", 2),  # the last one wins
        ("The answer is A. Wait, the answer is the red one.", None),  # last one unreadable
        ("The answer is a bird", None),  # an article, not option A
        ("The answer is E", None),  # outside four choices
        ("E", None),
        ("A cat sits on the mat.", None),
        ("I think it is B", None),
        ("", None),
    ],
)
def test_parse_choice(text, expected):
    assert parse_choice(text, 4) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Yes, there is a red circle.", "yes"),
        ("yes", "yes"),
        ("NO.", "no"),
        ("**No**, there is not.", "no"),
        ("Not that I can see.", None),
        ("Yesterday", None),
        ("I think yes", None),
        ("", None),
    ],
)
def test_parse_yes_no(text, expected):
    assert parse_yes_no(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8 6\nAssistant 2 misses the colour.", (8.0, 6.0)),
        ("\n 9, 7.5 \nbecause", (9.0, 7.5)),
        ("**7 7**\n", (7.0, 7.0)),
        ("Assistant 1: 8, Assistant 2: 6", None),
        ("8\n6", None),
        ("11 3", None),
        ("", None),
    ],
)
def test_parse_review_scores(text, expected):
    assert parse_review_scores(text) == expected


# --- prompts ------------------------------------------------------------------------------------


def test_scienceqa_prompts():
    item = _item("1", question="Which is red?", choices=("the square", "the circle"), answer=1)
    assert render("scienceqa", None, item) == (
        "Which is red?\nA. the square\nB. the circle\n"
        "Answer with the option's letter from the given choices directly."
    )
    hinted = _item("2", question="Q?", choices=("x", "y"), answer=0, hint="It is sunny.")
    assert render("scienceqa", "lmms", hinted).startswith("Context: It is sunny.\nQ?\nA. x\n")
    expected = PromptInput("Q?", ("x", "y"), "It is sunny.")
    assert render("scienceqa", "zero_shot", hinted) == render_prompt("zero_shot_mc", expected)
    assert render("scienceqa", "cot", hinted) == render_prompt("cot_thought", expected)
    assert "internal thoughts" in render("scienceqa", "cot", hinted)
    with pytest.raises(EvaluationError, match="no prompt 'cot'"):
        render("pope", "cot", item)


def test_pope_and_review_prompts():
    item = _item("1", question="Is there a red circle in the image?", answer="yes")
    assert render("pope", None, item) == (
        "Is there a red circle in the image?\nAnswer the question using a single word or phrase."
    )
    open_item = _item("2", question="Describe it.", answer="A red circle.", extra={"caption": "c"})
    review = render_review(open_item, "A blue square.")
    assert "[Question]\nDescribe it." in review
    assert review.index("[Assistant 1]\nA red circle.") < review.index(
        "[Assistant 2]\nA blue square."
    )
    assert "a single line containing only two values" in review
    with pytest.raises(EvaluationError, match="unknown review prompt"):
        render_review(open_item, "x", version="llava_bench_v9")


# --- loaders ------------------------------------------------------------------------------------


@pytest.fixture
def shapes_dir(tmp_path):
    make_shapes(tmp_path, n=20, seed=1)
    return tmp_path


def test_load_shapes_scienceqa(shapes_dir):
    items = load_items("scienceqa", shapes_dir / "scienceqa.parquet")
    assert len(items) == 20
    assert [i.key for i in items[:3]] == ["1", "2", "3"]
    assert {i.subject for i in items} == {"NAT", "SOC", "LAN"}
    assert {i.context for i in items} == {"IMG"}
    assert all(i.image and i.image.startswith(b"\x89PNG") for i in items)
    assert all(isinstance(i.answer, int) and 0 <= i.answer < len(i.choices) for i in items)
    test = load_items("scienceqa", shapes_dir / "scienceqa.parquet", split="test")
    assert [i.split for i in test] == ["test", "test"]
    # Keys do not depend on filtering or limit: a row keeps its key.
    everything = {i.key: i for i in items}
    assert all(everything[i.key] == i for i in test)
    assert load_items("scienceqa", shapes_dir / "scienceqa.parquet", limit=4) == items[:4]


def test_load_shapes_pope(shapes_dir):
    items = load_items("pope", shapes_dir / "pope.parquet")
    assert len(items) == 120
    assert {i.answer for i in items} == {"yes", "no"}
    # Six questions per image: each image is validated once and held once.
    same = [i for i in items if i.extra["image_source"] == items[0].extra["image_source"]]
    assert len(same) == 6 and all(i.image is items[0].image for i in same)
    adversarial = load_items("pope", shapes_dir / "pope.parquet", split="adversarial")
    assert len(adversarial) == 40 and {i.category for i in adversarial} == {"adversarial"}
    assert adversarial[0].key.startswith("adversarial/")
    with pytest.raises(EvaluationError, match="POPE splits are"):
        load_items("pope", shapes_dir / "pope.parquet", split="test")


def _scienceqa_rows(tmp_path) -> list[dict]:
    """Seven questions over NAT/SOC/LAN and IMG/TXT/NO; images as paths next to the file."""
    (tmp_path / "img").mkdir(exist_ok=True)
    for name in ("a", "b", "c"):
        (tmp_path / "img" / f"{name}.png").write_bytes(_png())
    three = ["x", "y", "z"]
    four = ["w", "x", "y", "z"]
    return [
        dict(question="q1", choices=three, answer=0, subject="natural science", image="img/a.png"),
        dict(question="q2", choices=three, answer=1, subject="natural science", hint="h2"),
        dict(question="q3", choices=three, answer=2, subject="social science", image="img/b.png"),
        dict(question="q4", choices=three, answer=0, subject="social science", hint=""),
        dict(question="q5", choices=three, answer=1, subject="language science", image="img/c.png"),
        dict(question="q6", choices=four, answer=3, subject="language science", image=None),
        dict(question="q7", choices=four, answer=0, subject="language science", hint="h7"),
    ]


def test_load_jsonl_scienceqa_contexts(tmp_path):
    path = _jsonl(tmp_path / "sqa.jsonl", _scienceqa_rows(tmp_path))
    image_only = load_items("scienceqa", path)
    assert [i.key for i in image_only] == ["1", "3", "5"]
    everything = load_items("scienceqa", path, all_contexts=True)
    assert [i.context for i in everything] == ["IMG", "TXT", "IMG", "NO", "IMG", "NO", "TXT"]
    assert [i.subject for i in everything] == ["NAT", "NAT", "SOC", "SOC", "LAN", "LAN", "LAN"]


def test_load_open_and_heldout_files(tmp_path):
    (tmp_path / "p.png").write_bytes(_png("blue"))
    rows = [
        {"question_id": 7, "question": "Describe.", "gpt_answer": "Blue.", "image": "p.png"},
        {"question_id": 9, "prompt": "Say hi.", "reference": "Hi.", "category": "conv"},
    ]
    path = _jsonl(tmp_path / "open.jsonl", rows)
    items = load_items("judge_open", path)
    assert [(i.key, i.question, i.answer, i.category) for i in items] == [
        ("7", "Describe.", "Blue.", ""),
        ("9", "Say hi.", "Hi.", "conv"),
    ]
    assert items[0].image == _png("blue") and items[1].image is None
    held = load_items("helpsteer_heldout", path)
    assert [i.question for i in held] == ["Describe.", "Say hi."]
    noisy = load_items("noisy_image_text", path)
    assert all(i.image is None for i in noisy)  # the runner supplies the image


def test_missing_file_and_unknown_task(tmp_path):
    with pytest.raises(EvaluationError, match="no such file"):
        load_items("pope", tmp_path / "absent.parquet")
    (tmp_path / "x.csv").write_text("question\nq\n")
    with pytest.raises(EvaluationError, match=r"expected a \.parquet or \.jsonl"):
        load_items("pope", tmp_path / "x.csv")
    with pytest.raises(EvaluationError, match="unknown task"):
        load_items("mmmu", tmp_path / "x.csv")


def test_missing_column_in_parquet_names_it(tmp_path):
    table = pa.table({"question": ["q"], "answer": [0], "image": [_png()]})
    pq.write_table(table, tmp_path / "sqa.parquet")
    with pytest.raises(EvaluationError, match=r"sqa\.parquet, row 1: missing column 'choices'"):
        load_items("scienceqa", tmp_path / "sqa.parquet")


@pytest.mark.parametrize(
    ("task", "row", "message"),
    [
        ("pope", {"question": "q", "image": "p.png"}, r"missing column 'answer' \(has image"),
        ("pope", {"question": "q", "answer": "maybe", "image": "p.png"}, "'answer'.*yes' or 'no"),
        ("pope", {"question": "q", "answer": "yes"}, "'image': an image is required"),
        ("pope", {"question": "q", "answer": "no", "image": "../p.png"}, "stay inside"),
        ("pope", {"question": "q", "answer": "no", "image": "gone.png"}, "not found"),
        ("pope", {"question": "q", "answer": "no", "image": "n.txt"}, "'image'.*not an image"),
        (
            "scienceqa",
            {"question": "q", "choices": ["a", "b"], "answer": 2, "image": "p.png"},
            "index 2 is outside the 2 choices",
        ),
        (
            "scienceqa",
            {"question": "q", "choices": "a, b", "answer": 0, "image": "p.png"},
            "'choices'",
        ),
        ("judge_open", {"question": "q"}, r"missing column 'answer' / 'gpt_answer'"),
        ("helpsteer_heldout", {"question": ""}, r"'question': is empty"),
    ],
)
def test_bad_rows_name_row_and_column(tmp_path, task, row, message):
    (tmp_path / "sub").mkdir()
    (tmp_path / "p.png").write_bytes(_png())
    (tmp_path / "sub" / "p.png").write_bytes(_png())
    (tmp_path / "sub" / "n.txt").write_text("not an image")
    good = {"question": "fine", "answer": "yes", "image": "p.png"} if task == "pope" else None
    rows = [row] if good is None else [good, row]
    path = _jsonl(tmp_path / "sub" / "f.jsonl", rows)
    with pytest.raises(EvaluationError, match=message) as info:
        load_items(task, path)
    assert f"row {len(rows)}" in str(info.value)


def test_invalid_json_duplicate_keys_and_empty_result(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "q", "prompt": "p"}\n{not json\n')
    with pytest.raises(EvaluationError, match=r"bad\.jsonl, row 2: invalid JSON"):
        load_items("noisy_image_text", path)
    dupes = _jsonl(tmp_path / "d.jsonl", [{"question_id": 1, "question": "a"}] * 2)
    with pytest.raises(EvaluationError, match=r"row 2.*key '1' repeats row 1"):
        load_items("noisy_image_text", dupes)
    text_only = _jsonl(
        tmp_path / "t.jsonl", [{"question": "q", "choices": ["a", "b"], "answer": 0}]
    )
    with pytest.raises(EvaluationError, match="all_contexts"):
        load_items("scienceqa", text_only)
    with pytest.raises(EvaluationError, match="no 'split' column"):
        load_items("scienceqa", text_only, all_contexts=True, split="test")


# --- scienceqa ----------------------------------------------------------------------------------


def test_scienceqa_accuracy_by_subject_and_context(tmp_path):
    items = load_items(
        "scienceqa", _jsonl(tmp_path / "sqa.jsonl", _scienceqa_rows(tmp_path)), all_contexts=True
    )
    answers = {
        "1": ["A"],  # NAT IMG, gold A: right
        "2": ["The answer is (C)."],  # NAT TXT, gold B: wrong
        "3": ["C. the circle"],  # SOC IMG, gold C: right
        "4": ["The answer is A. Wait, the answer is B."],  # SOC NO, gold A: the last, B, wrong
        "5": ["b"],  # LAN IMG, gold B: right
        "6": ["I cannot tell."],  # LAN NO, gold D: parse failure, wrong
        "7": ["The answer is A"],  # LAN TXT, gold A: right
    }
    seen: list = []
    result = evaluate("scienceqa", items, generate=_scripted(answers, seen))
    m = result.metrics
    # 4 of 7 right; NAT 1/2, SOC 1/2, LAN 2/3; IMG 3/3, TXT 1/2, NO 0/2.
    assert m["n"] == 7 and m["samples"] == 1 and m["parse_failures"] == 1
    assert m["accuracy"] == pytest.approx(4 / 7)
    assert m["majority_accuracy"] == pytest.approx(4 / 7)
    assert {k: v["accuracy"] for k, v in m["by_subject"].items()} == pytest.approx(
        {"NAT": 1 / 2, "SOC": 1 / 2, "LAN": 2 / 3}
    )
    assert list(m["by_context"]) == ["IMG", "TXT", "NO"]
    assert {k: (v["n"], v["accuracy"]) for k, v in m["by_context"].items()} == {
        "IMG": (3, 1.0),
        "TXT": (2, 0.5),
        "NO": (2, 0.0),
    }
    record = result.records[3]
    assert record["parsed"] == ["B"] and record["gold"] == "A" and record["score"] == 0.0
    assert result.records[5]["parsed"] == [None]
    # Images go to the policy only where the item has one.
    has_image = [True, False, True, False, True, False, False]
    assert [image is not None for _, _, image in seen] == has_image


def test_scienceqa_several_samples_mean_and_majority():
    items = [
        _item("a", choices=("p", "q", "r"), answer=0),
        _item("b", choices=("p", "q", "r"), answer=1),
        _item("c", choices=("p", "q", "r"), answer=2),
    ]
    answers = {
        "a": ["A", "B", "A"],  # 2/3 right; majority A: right
        "b": ["A", "dunno", "B"],  # 1/3 right; A and B tie, A came first: wrong
        "c": ["x", "y", "C"],  # 1/3 right; the one parsed vote, C: right
    }
    result = evaluate("scienceqa", items, generate=_scripted(answers), samples=3)
    m = result.metrics
    assert m["samples"] == 3 and m["parse_failures"] == 3
    assert m["accuracy"] == pytest.approx((2 / 3 + 1 / 3 + 1 / 3) / 3)
    assert m["majority_accuracy"] == pytest.approx(2 / 3)
    assert [r["majority"] for r in result.records] == ["A", "A", "C"]
    assert item_scores(result.records) == pytest.approx({"a": 2 / 3, "b": 1 / 3, "c": 1 / 3})


# --- pope ---------------------------------------------------------------------------------------


def test_pope_metrics_by_hand(tmp_path):
    (tmp_path / "p.png").write_bytes(_png())
    golds = ["yes", "yes", "no", "no"]
    replies = {
        "random": ["Yes, there is.", "No.", "no", "YES"],  # TP FN TN FP
        "popular": ["yes", "Yes", "Yes.", "yes"],  # TP TP FP FP
        "adversarial": ["Maybe.", "yes", "No, there is not.", "no"],  # fail TP TN TN
    }
    rows, answers = [], {}
    for category, texts in replies.items():
        for i, (gold, text) in enumerate(zip(golds, texts, strict=True)):
            rows.append(dict(question_id=i, question="q?", answer=gold, image="p.png"))
            rows[-1]["category"] = category
            answers[f"{category}/{i}"] = [text]
    items = load_items("pope", _jsonl(tmp_path / "pope.jsonl", rows))
    m = evaluate("pope", items, generate=_scripted(answers)).metrics
    # Overall, 12 answers: 7 right; TP 4, FP 3, 6 truly yes, 7 said yes, 1 unreadable.
    # precision 4/7, recall 4/6, F1 = 2PR/(P+R) = (16/21)/(26/21) = 8/13, yes-ratio 7/12.
    assert m["accuracy"] == pytest.approx(7 / 12)
    assert m["precision"] == pytest.approx(4 / 7)
    assert m["recall"] == pytest.approx(4 / 6)
    assert m["f1"] == pytest.approx(8 / 13)
    assert m["yes_ratio"] == pytest.approx(7 / 12)
    assert m["parse_failures"] == 1
    by = m["by_category"]
    assert list(by) == ["random", "popular", "adversarial"]
    # random: P 1/2, R 1/2, F1 1/2, yes 2/4; popular: P 2/4, R 2/2, F1 2/3, yes 4/4;
    # adversarial: P 1/1, R 1/2 (the unreadable yes counts against recall), F1 2/3, yes 1/4.
    fields = ("accuracy", "precision", "recall", "f1", "yes_ratio", "parse_failures")
    assert {c: tuple(by[c][f] for f in fields) for c in by} == {
        "random": pytest.approx((0.5, 0.5, 0.5, 0.5, 0.5, 0)),
        "popular": pytest.approx((0.5, 0.5, 1.0, 2 / 3, 1.0, 0)),
        "adversarial": pytest.approx((0.75, 1.0, 0.5, 2 / 3, 0.25, 1)),
    }
    assert metric_value(m, "f1") == pytest.approx(8 / 13)
    assert metric_value(m, "by_category.popular.recall") == 1.0
    assert metric_value(m, "by_category.absent.recall") is None


# --- judged tasks -------------------------------------------------------------------------------


class ScriptedReviewer:
    """Stands for a judge model: fixed review lines per model answer."""

    provider, model = "scripted", "reviewer-1"

    def __init__(self, replies: dict[str, list[str]]) -> None:
        self.replies = replies
        self.calls: list[tuple[str, bytes | None]] = []
        self.lock = threading.Lock()

    def complete(self, prompt, image=None, image_mime="image/png") -> TextResult:
        answer = prompt.split("[Assistant 2]\n", 1)[1].split("\n", 1)[0]
        with self.lock:
            self.calls.append((answer, image))
            queue = self.replies[answer]
            text = queue.pop(0) if len(queue) > 1 else queue[0]
        return TextResult(text, Usage(100, 10))

    def rate(self, item):
        raise AssertionError("judge_open asks for reviews, not ratings")


def test_judge_open_relative_score_by_category():
    items = [
        _item("1", answer="A red circle.", category="conv", image=_png()),
        _item("2", answer="Two squares.", category="detail"),
        _item("3", answer="Blue.", category="conv"),
        _item("4", answer="Green.", category="detail"),
    ]
    answers = {"1": ["ans one"], "2": ["ans two"], "3": ["ans three"], "4": ["ans four"]}
    judge = ScriptedReviewer(
        {
            "ans one": ["8 6\nAssistant 2 misses the size."],
            "ans two": ["9, 9\nBoth right."],
            "ans three": ["I cannot compare these."],  # never readable: a failure
            "ans four": ["Scores: high", "10 5\nHalf of it."],  # readable when asked again
        }
    )
    limits = RunLimits(concurrency=2, max_invalid_answers=2)
    result = evaluate(
        "judge_open", items, generate=_scripted(answers), judge=judge, judge_limits=limits
    )
    m = result.metrics
    # Judged: (8, 6), (9, 9), (10, 5). Model mean 20/3, reference mean 27/3: 100 * 20/27.
    assert m["judged"] == 3 and m["judge_failures"] == 1
    assert m["model_score"] == pytest.approx(20 / 3)
    assert m["reference_score"] == pytest.approx(9.0)
    assert m["relative_score"] == pytest.approx(100 * 20 / 27)
    # conv: only (8, 6) -> 75; detail: (9, 9), (10, 5) -> 100 * 14/19.
    assert m["by_category"]["conv"]["relative_score"] == pytest.approx(75.0)
    assert m["by_category"]["detail"]["relative_score"] == pytest.approx(100 * 14 / 19)
    assert m["judge_input_tokens"] == 100 * 6  # 4 answers, two of them asked twice
    failed = result.records[2]
    assert failed["score"] is None and "two scores" in failed["judgements"][0]["error"]
    assert failed["judgements"][0]["raw"] == "I cannot compare these."
    assert result.records[0]["judgements"][0]["model_score"] == 6.0
    assert item_scores(result.records) == {"1": 6.0, "2": 9.0, "4": 5.0}
    # The judge sees the image of an item that has one.
    assert dict(judge.calls)["ans one"] == _png()


class ScriptedRater:
    """Stands for a judge model rating one completion on the HelpSteer attributes."""

    provider, model = "scripted", "rater-1"
    SCORES = {"good": (4, 4, 4, 2, 1), "fine": (3, 3, 4, 1, 2), "bad": (1, 1, 2, 0, 0)}

    def __init__(self) -> None:
        self.items: list[JudgeItem] = []
        self.lock = threading.Lock()

    def rate(self, item: JudgeItem) -> JudgeResult:
        with self.lock:
            self.items.append(item)
        (text,) = item.completions
        if text not in self.SCORES:
            raise InvalidJudgeOutput("not JSON", raw="<garbled>")
        h, c, co, cx, v = self.SCORES[text]
        rating = CompletionRating(h, c, co, cx, v, reasoning=f"it is {text}")
        return JudgeResult(ratings=(rating,), reasoning="", raw="{}", usage=Usage(50, 20))

    def complete(self, prompt, image=None, image_mime="image/png"):
        raise AssertionError("rating tasks do not ask for free text")


def test_helpsteer_heldout_means_per_attribute():
    items = [_item("1", image=_png()), _item("2"), _item("3"), _item("4")]
    answers = {"1": ["good", "bad"], "2": ["fine", "fine"], "3": ["???", "???"], "4": ["bad", "x"]}
    judge = ScriptedRater()
    result = evaluate(
        "helpsteer_heldout",
        items,
        generate=_scripted(answers),
        judge=judge,
        samples=2,
        judge_limits=RunLimits(max_invalid_answers=1),
    )
    m = result.metrics
    # Rated: good, bad, fine, fine, bad; three answers unreadable to the judge.
    assert (m["n"], m["rated"], m["judge_failures"], m["samples"]) == (4, 5, 3, 2)
    assert m["helpfulness"] == pytest.approx((4 + 1 + 3 + 3 + 1) / 5)
    assert m["verbosity"] == pytest.approx((1 + 0 + 2 + 2 + 0) / 5)
    assert result.records[0]["attributes"]["helpfulness"] == pytest.approx(2.5)
    assert result.records[2]["score"] is None
    assert result.records[3]["score"] == 1.0  # the mean over the samples that were rated
    assert all(len(i.completions) == 1 for i in judge.items)
    assert {i.key: i.image for i in judge.items}["1#0"] == _png()
    assert headline_metrics("helpsteer_heldout") == ("helpfulness",)


def test_noisy_image_text_blank_and_seeded_noise():
    items = [_item("1"), _item("2")]
    seen: list = []

    def generate(inputs, samples):
        seen.extend(inputs)
        # Distracted by noise, fine on a blank page.
        return [["good" if image.getextrema()[0] == (255, 255) else "bad"] for *_, image in inputs]

    judge = ScriptedRater()
    result = evaluate("noisy_image_text", items, generate=generate, judge=judge)
    assert [r["key"] for r in result.records] == ["1/blank", "1/noise", "2/blank", "2/noise"]
    by = result.metrics["by_image"]
    assert (by["blank"]["n"], by["blank"]["helpfulness"]) == (2, 4.0)
    assert (by["noise"]["n"], by["noise"]["helpfulness"]) == (2, 1.0)
    assert metric_value(result.metrics, "by_image.noise.correctness") == 1.0
    images = {key: image for key, _, image in seen}
    assert images["1/blank"].getextrema() == ((255, 255),) * 3
    assert images["1/noise"].tobytes() != images["2/noise"].tobytes()
    evaluate("noisy_image_text", items, generate=generate, judge=judge)  # seen gets 4 more
    rerun = {key: image for key, _, image in seen[4:]}
    assert rerun["1/noise"].tobytes() == images["1/noise"].tobytes()
    assert all(i.image is None for i in judge.items)  # the judge reads the instruction alone


def test_text_only_sends_no_image_and_sits_beside_noisy_image_text():
    items = [_item("1"), _item("2")]
    seen: list = []

    def generate(inputs, samples):
        seen.extend(inputs)
        return [["good" if image is None else "bad"] for *_, image in inputs]

    judge = ScriptedRater()
    text = evaluate("text_only", items, generate=generate, judge=judge)
    assert [key for key, _, _ in seen] == ["1", "2"] and all(i is None for *_, i in seen)
    assert [r["has_image"] for r in text.records] == [False, False]
    assert (text.metrics["by_image"]["none"]["n"], text.metrics["helpfulness"]) == (2, 4.0)
    assert metric_value(text.metrics, "by_image.none.helpfulness") == 4.0
    noisy = evaluate("noisy_image_text", items, generate=generate, judge=judge)
    # One table: text_only's "none" column comes first, then blank and noise.
    assert list(text.metrics["by_image"]) + list(noisy.metrics["by_image"]) == [
        "none",
        "blank",
        "noise",
    ]
    with pytest.raises(EvaluationError, match="text_only needs a judge"):
        evaluate("text_only", items, generate=generate)


# --- the runner ---------------------------------------------------------------------------------


def _mc_items(n: int) -> list[EvalItem]:
    return [_item(str(i), choices=("p", "q"), answer=i % 2) for i in range(n)]


def test_progress_chunks_and_stop():
    items = _mc_items(5)
    answers = {str(i): ["A"] for i in range(5)}
    progress: list[tuple[int, int]] = []
    evaluate(
        "scienceqa",
        items,
        generate=_scripted(answers),
        chunk_size=2,
        on_progress=lambda done, total: progress.append((done, total)),
    )
    assert progress == [(0, 5), (2, 5), (4, 5), (5, 5)]
    calls: list[int] = []
    result = evaluate(
        "scienceqa",
        items,
        generate=_scripted(answers),
        chunk_size=2,
        should_stop=lambda: bool(calls.append(1)) or len(calls) > 1,  # stop after a chunk
    )
    assert result.stopped and [r["key"] for r in result.records] == ["0", "1"]
    assert result.metrics["n"] == 2


def test_runner_refuses_bad_arguments_and_bad_generate_output():
    items = _mc_items(2)
    good = _scripted({"0": ["A"], "1": ["B"]})
    with pytest.raises(EvaluationError, match="needs a judge"):
        evaluate("judge_open", items, generate=good)
    with pytest.raises(EvaluationError, match="unknown review prompt"):
        asked: list = []
        policy = _scripted({"0": ["A"]}, asked)
        judge = ScriptedReviewer({})
        evaluate(
            "judge_open", [_item("0", answer="r")], generate=policy, judge=judge, review_prompt="v9"
        )
    assert asked == [] and judge.calls == []  # refused before anything ran
    with pytest.raises(EvaluationError, match="samples must be between"):
        evaluate("scienceqa", items, generate=good, samples=0)
    with pytest.raises(EvaluationError, match="no prompt"):
        evaluate("scienceqa", items, generate=good, prompt="pope")
    with pytest.raises(EvaluationError, match="1 answer lists for 2 inputs"):
        evaluate("scienceqa", items, generate=lambda inputs, k: [["A"]])
    with pytest.raises(EvaluationError, match="2 answers, not 1"):
        evaluate("scienceqa", items, generate=lambda inputs, k: [["A", "B"]] * 2)
    with pytest.raises(EvaluationError, match="appears more than once"):
        evaluate("scienceqa", [items[0], items[0]], generate=good)


def test_records_and_metrics_are_json():
    items = _mc_items(2)
    scripted = _scripted({"0": ["A"], "1": ["no"]})
    for task in ("scienceqa", "pope"):
        task_items = items if task == "scienceqa" else [_item("0", answer="yes")]
        result = evaluate(task, task_items, generate=scripted)
        json.dumps({"records": result.records, "metrics": result.metrics}, allow_nan=False)
    judged = evaluate(
        "helpsteer_heldout",
        [_item("0")],
        generate=_scripted({"0": ["good"]}),
        judge=ScriptedRater(),
    )
    json.dumps({"records": judged.records, "metrics": judged.metrics}, allow_nan=False)
    assert set(TASKS) == {
        "scienceqa",
        "pope",
        "judge_open",
        "helpsteer_heldout",
        "noisy_image_text",
        "text_only",
    }


# --- the bootstrap ------------------------------------------------------------------------------


def test_bootstrap_identical_runs_have_zero_width():
    a = {str(i): float(i % 3 == 0) for i in range(50)}
    out = bootstrap_diff(a, dict(a))
    assert (out["diff"], out["low"], out["high"], out["paired"], out["n"]) == (0, 0, 0, True, 50)


def test_bootstrap_clear_difference_excludes_zero_and_is_seeded():
    a = {str(i): float(i % 10 < 3) for i in range(100)}  # 30% right
    b = {str(i): float(i % 10 < 8) for i in range(100)}  # 80% right, on the same items
    out = bootstrap_diff(a, b, n_resamples=500, seed=7)
    assert out["diff"] == pytest.approx(0.5)
    assert 0 < out["low"] < 0.5 < out["high"]
    assert bootstrap_diff(a, b, n_resamples=500, seed=7) == out
    other = bootstrap_diff(a, b, n_resamples=500, seed=8)
    assert (other["low"], other["high"]) != (out["low"], out["high"])
    reverse = bootstrap_diff(b, a, n_resamples=500, seed=7)
    assert reverse["diff"] == pytest.approx(-0.5) and reverse["high"] < 0


def test_bootstrap_pairs_items_and_falls_back_when_keys_differ():
    # Items differ a lot in difficulty; b is exactly one point better on every item.
    a = {str(i): float(i % 10) for i in range(60)}
    b = {k: v + 1 for k, v in a.items()}
    paired = bootstrap_diff(a, b)
    assert paired["paired"] and paired["low"] == pytest.approx(1) == paired["high"]
    renamed = {f"other-{k}": v for k, v in b.items()}
    unpaired = bootstrap_diff(a, renamed)
    assert not unpaired["paired"] and unpaired["n"] == 0
    assert (unpaired["n_a"], unpaired["n_b"]) == (60, 60)
    assert unpaired["diff"] == pytest.approx(1)
    assert unpaired["low"] < 1 < unpaired["high"] and unpaired["high"] - unpaired["low"] > 1
    with pytest.raises(ValueError, match="at least one scored item"):
        bootstrap_diff({}, b)


# --- purity and the real model ------------------------------------------------------------------


def test_core_imports_without_django_or_torch():
    code = (
        "import sys, training.core.evaluation\n"
        "bad = [m for m in ('django', 'torch', 'transformers') if m in sys.modules]\n"
        "print(bad, file=sys.stderr)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_transformers_generate_on_the_tiny_model(tiny_policy, shapes_dir):
    items = load_items("scienceqa", shapes_dir / "scienceqa.parquet", limit=4)
    generate = transformers_generate(
        tiny_policy, temperature=0.7, max_new_tokens=6, token_budget=4096, seed=1
    )
    result = evaluate("scienceqa", items, generate=generate, samples=2, chunk_size=3)
    assert [len(r["answers"]) for r in result.records] == [2, 2, 2, 2]
    assert all(isinstance(a, str) for r in result.records for a in r["answers"])
    assert result.metrics["n"] == 4 and result.metrics["samples"] == 2
    # Seeded per item: the same answers again, whatever the chunking.
    again = evaluate("scienceqa", items, generate=generate, samples=2, chunk_size=4)
    assert [r["answers"] for r in again.records] == [r["answers"] for r in result.records]
    greedy = transformers_generate(tiny_policy, temperature=0, max_new_tokens=4, token_budget=4096)
    with pytest.raises(EvaluationError, match="temperature 0"):
        evaluate("scienceqa", items, generate=greedy, samples=2)


def test_generation_asks_what_evaluation_asks_for_both_tasks():
    """The loop generates its pairs with these templates: the prompts must be the same text."""
    mc = _item("1", question="How many shapes?", choices=("2", "3"), answer=0, hint="Look.")
    assert render("scienceqa", "lmms", mc) == render_prompt(
        "lmms", PromptInput(mc.question, mc.choices, mc.hint)
    )
    yes_no = _item("2", question="Is there a red shape in the image?", answer="yes")
    assert render("pope", None, yes_no) == render_prompt(
        "short_answer", PromptInput(yes_no.question)
    )
