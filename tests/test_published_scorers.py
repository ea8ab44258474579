"""Scores that compare with published tables: the same answers read by this project's lenient
parser, by LLaVA's eval_pope.py and by lmms-eval's POPE / ScienceQA scorers, worked out by
hand on answers where the three disagree; and the run and comparison pages that label them."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from datasets_app.core.shapes import make_shapes
from tests import factories
from tests.test_evaluation_core import _png
from training.core.evaluation import evaluate, item_scores, load_items
from training.core.evaluation.metrics import SCORER_COLUMNS, compute_metrics, scorer_rows
from training.core.evaluation.parsing import (
    parse_choice,
    parse_choice_strict,
    parse_yes_no,
    parse_yes_no_exact,
    parse_yes_no_llava,
)
from training.models import EvaluationItem
from training.services import evaluations
from workers import jobs

# --- parsers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "lenient", "llava", "lmms_eval"),
    [
        ("Yes.", "yes", "yes", None),  # lmms-eval: "yes." is not "yes"
        ("Yes, there is", "yes", "yes", None),
        ("There is no cat", None, "no", None),  # LLaVA: "no" anywhere in the first sentence
        ("I cannot tell", None, None, None),  # LLaVA calls it yes by default: None here
        ("no", "no", "no", "no"),
        ("  YES \n", "yes", "yes", "yes"),
        ("No!", "no", None, None),  # LLaVA splits on spaces: "No!" is not "No", so yes
        ("Yes, there is no cat.", "yes", "no", None),  # LLaVA: any "no" decides
        ("Not that I can see.", None, None, None),  # LLaVA: "Not" is none of its words
        ("**Yes**", "yes", "yes", None),
        ("It is a cat. There is no dog.", None, None, None),  # only the first sentence counts
    ],
)
def test_the_three_pope_readings(text, lenient, llava, lmms_eval):
    assert parse_yes_no(text) == lenient
    assert parse_yes_no_llava(text) == llava
    assert parse_yes_no_exact(text) == lmms_eval


@pytest.mark.parametrize(
    ("text", "lenient", "strict"),
    [
        ("The answer is B", "B", None),  # lmms-eval has no "The answer is X"
        ("B.", "B", "B"),
        ("b", "B", "B"),  # a bare letter in either case
        ("(B)", "B", None),
        ("B. the red circle", "B", "B"),
        ("b. top", "B", None),  # "X." only with an uppercase letter
        ("B: two", "B", None),
        (" B \n", "B", "B"),
        ("E.", None, "E"),  # outside four choices: our parse failure, lmms-eval's wrong letter
        ("I think it is B", None, None),
    ],
)
def test_the_two_scienceqa_readings(text, lenient, strict):
    index = parse_choice(text, 4)
    assert (None if index is None else "ABCD"[index]) == lenient
    assert parse_choice_strict(text) == strict


def test_the_llava_reading_matches_eval_pope_on_what_it_decides():
    """LLaVA's rule, as its eval_pope.py writes it, is our reading with the default put back."""

    def eval_pope(text: str) -> str:  # llava/eval/eval_pope.py, lines 10-19
        if text.find(".") != -1:
            text = text.split(".")[0]
        words = text.replace(",", "").split(" ")
        return "no" if "No" in words or "not" in words or "no" in words else "yes"

    texts = ["Yes.", "No, not at all", "There is no cat", "Maybe", "No!", "nope", "no. yes", ""]
    assert [parse_yes_no_llava(t) or "yes" for t in texts] == [eval_pope(t) for t in texts]


# --- metrics by hand ----------------------------------------------------------------------------

# (answer, truth); what each scorer reads is in the comments: lenient / LLaVA / lmms-eval.
POPE_ANSWERS = [
    ("Yes.", "yes"),  # yes / yes / -
    ("Yes, there is", "yes"),  # yes / yes / -
    ("There is no cat", "no"),  # - / no / -
    ("I cannot tell", "yes"),  # - / yes by default / -
    ("no", "yes"),  # no / no / no
    ("No!", "no"),  # no / yes by default / -
    ("yes", "no"),  # yes / yes / yes
    ("No", "no"),  # no / no / no
    ("yes", "yes"),  # yes / yes / yes
]


def _pope_metrics(tmp_path):
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "p.png").write_bytes(_png())
    rows = [
        {"question_id": i, "question": "Is there a cat?", "answer": gold, "image": "p.png"}
        | {"category": "adversarial"}
        for i, (_, gold) in enumerate(POPE_ANSWERS)
    ]
    path = tmp_path / "pope.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = load_items("pope", str(path))
    answers = {item.key: [text] for item, (text, _) in zip(items, POPE_ANSWERS, strict=True)}

    def generate(inputs, samples):
        return [answers[key] for key, _, _ in inputs]

    return evaluate("pope", items, generate=generate)


def test_pope_is_scored_three_ways(tmp_path):
    result = _pope_metrics(tmp_path)
    m = result.metrics
    approx = pytest.approx
    # Lenient: 5 of 9 right; TP 3 (1, 2, 9), FP 1 (7); 5 truly yes; 4 said yes; 2 unparsed.
    # precision 3/4, recall 3/5, F1 = (9/10) / (27/20) = 2/3.
    assert (m["accuracy"], m["precision"], m["recall"], m["f1"]) == approx(
        (5 / 9, 3 / 4, 3 / 5, 2 / 3)
    )
    assert m["yes_ratio"] == approx(4 / 9) and m["parse_failures"] == 2
    # LLaVA: 4 and 6 are yes by default. 6 of 9 right; TP 4, FP 2 (6, 7), FN 1 (5), TN 2.
    # precision 2/3, recall 4/5, F1 = (16/15) / (22/15) = 8/11; yes-ratio 6/9.
    llava = m["llava"]
    assert (llava["accuracy"], llava["precision"], llava["recall"], llava["f1"]) == approx(
        (6 / 9, 2 / 3, 4 / 5, 8 / 11)
    )
    assert llava["yes_ratio"] == approx(6 / 9) and llava["unparsed"] == 2
    # lmms-eval: only 5, 7, 8, 9 are read. 2 of 9 right (8, 9); TP 1 (9), FP 1 (7), and the
    # one false negative is 5, the exact "no": 1, 2 and 4 fall out of recall. P = R = F1 = 1/2.
    lmms = m["lmms_eval"]
    assert (lmms["accuracy"], lmms["precision"], lmms["recall"], lmms["f1"]) == approx(
        (2 / 9, 1 / 2, 1 / 2, 1 / 2)
    )
    # The model said yes 2 times in 9; lmms-eval would print the truth's 5 in 9.
    assert lmms["yes_ratio"] == approx(2 / 9) and lmms["gold_yes_ratio"] == approx(5 / 9)
    assert lmms["parse_failures"] == 5
    # The split's breakdown carries the same three.
    (split,) = m["by_category"].values()
    assert split["llava"] == llava and split["lmms_eval"] == lmms
    # The paired bootstrap still compares the lenient per-item score.
    scores = item_scores(result.records)
    assert sum(scores.values()) / len(scores) == approx(m["accuracy"])


def test_scienceqa_is_scored_both_ways():
    records = [
        {"answers": [text], "gold": "B", "parsed": [None], "score": 0.0, "majority_correct": 0}
        for text in ["The answer is B", "B.", "b", "(B)", "B. the red circle", "b. top", "E."]
    ]
    for r, ok in zip(records, [1, 1, 1, 1, 1, 1, 0], strict=True):
        r["parsed"], r["score"] = (["B"] if ok else [None]), float(ok)  # the lenient reading
    m = compute_metrics("scienceqa", records)
    assert m["accuracy"] == pytest.approx(6 / 7) and m["parse_failures"] == 1
    # Strict: right for "B.", "b", "B. the red circle"; "E." is read but wrong.
    assert m["lmms_eval"] == {"accuracy": pytest.approx(3 / 7), "parse_failures": 3}


def test_scienceqa_strict_score_averages_samples_like_the_headline():
    records = [
        {"answers": ["B", "(B)"], "gold": "B", "parsed": ["B", "B"], "score": 1.0},
        {"answers": ["A.", "A"], "gold": "A", "parsed": ["A", "A"], "score": 1.0},
    ]
    for r in records:
        r["majority_correct"], r["subject"] = True, "NAT"
    m = compute_metrics("scienceqa", records)
    assert m["lmms_eval"]["accuracy"] == pytest.approx((1 / 2 + 1) / 2)
    assert m["by_subject"]["NAT"]["lmms_eval"]["accuracy"] == pytest.approx(3 / 4)


def test_scorer_rows_label_each_scorer_and_skip_a_run_without_them(tmp_path):
    m = _pope_metrics(tmp_path).metrics
    rows = scorer_rows("pope", m)
    assert [r["scorer"].label for r in rows] == [
        "lenient (headline)",
        "LLaVA eval_pope.py",
        "lmms-eval (strict)",
    ]
    f1 = SCORER_COLUMNS.index("f1")
    assert [r["values"][f1] for r in rows] == pytest.approx([2 / 3, 8 / 11, 1 / 2])
    assert [r["unread"] for r in rows] == [2, 2, 5]
    assert scorer_rows("pope", {"accuracy": 0.5, "f1": 0.5}) == []  # stored before: no table
    assert scorer_rows("judge_open", {"relative_score": 80.0}) == []


# --- the pages ----------------------------------------------------------------------------------


def _finished_pope_run(tmp_path, checkpoint, metrics):
    make_shapes(tmp_path / "shapes", n=4, seed=2)
    run = evaluations.evaluation_launch(
        checkpoint=checkpoint,
        task="pope",
        data=str(tmp_path / "shapes" / "pope.parquet"),
        enqueue=False,
    )
    job = jobs.job_claim(run.job_id)
    EvaluationItem.objects.create(
        run=run, position=0, key="q0", prompt="Is there a cat?", answers=["Yes."],
        parsed=["yes"], gold="yes", score=1.0,
    )  # fmt: skip
    run.metrics, run.item_count = metrics, 1
    run.save(update_fields=["metrics", "item_count"])
    jobs.job_finish(job)
    return run


@pytest.mark.django_db
def test_the_run_page_shows_the_strict_numbers_labelled(client, staff_user, tmp_path):
    metrics = _pope_metrics(tmp_path / "m").metrics
    run = _finished_pope_run(tmp_path, factories.checkpoint("policy"), metrics)
    client.force_login(staff_user)
    body = client.get(reverse("training:evaluation", args=[run.pk])).content.decode()
    assert "<h2>Scorers</h2>" in body
    row = body.split('<tr data-scorer="lmms_eval">')[1].split("</tr>")[0]
    assert "<th>lmms-eval (strict)</th>" in row
    assert "<td>0.2222</td>" in row  # accuracy 2/9
    assert "<td>5</td>" in row  # its unparsed answers
    llava = body.split('<tr data-scorer="llava">')[1].split("</tr>")[0]
    assert "<th>LLaVA eval_pope.py</th>" in llava and "<td>0.7273</td>" in llava  # F1 8/11
    assert '<tr data-scorer="lenient"><th>lenient (headline)</th>' in body
    assert "the yes-ratio here is always the model" in body


@pytest.mark.django_db
def test_the_comparison_shows_the_published_scorers_beside_the_headline(
    client, staff_user, tmp_path
):
    metrics = _pope_metrics(tmp_path / "m").metrics
    a, b = factories.checkpoint("ck-a"), factories.checkpoint("ck-b")
    for ckpt in (a, b):
        _finished_pope_run(tmp_path / ckpt.name, ckpt, metrics)
    client.force_login(staff_user)
    body = client.get(
        reverse("training:compare"), {"checkpoints": [a.pk, b.pk], "tasks": "pope"}
    ).content.decode()
    for header in ("f1 · lmms-eval", "accuracy · lmms-eval", "f1 · LLaVA", "default yes · LLaVA"):
        assert f'<th class="published">{header}</th>' in body
    assert "<th>f1 · lenient</th>" in body
    row = body.split('data-checkpoint="ck-b"')[1].split("</tr>")[0]
    published = row.split('<td class="published">')[1:]
    assert [cell.split("</td>")[0] for cell in published] == ["0.500", "0.222", "0.727", "2"]


def test_an_answer_that_is_one_options_text_reads_as_that_option_leniently_only():
    from training.core.evaluation.parsing import parse_choice, parse_choice_strict

    choices = ("3", "1", "red", "B")
    assert parse_choice("3", 4, choices) == 0
    assert parse_choice("Red.", 4, choices) == 2
    assert parse_choice("B", 4, choices) == 1  # a bare letter is still the letter
    assert parse_choice("The answer is C.", 4, choices) == 2
    assert parse_choice("4", 4, choices) is None and parse_choice("3", 4) is None
    assert parse_choice_strict("3") is None
