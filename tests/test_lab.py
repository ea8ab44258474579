"""The lab (issue 16 point 4): every method from one start on one pool, the same held-out
sets, one record with deltas, intervals and costs; a failed method does not stop the rest,
and a resumed lab runs only what is not done. Then its page, and launching from it."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command
from django.urls import reverse

from common.charts import deltas_svg
from training.core import lab_results
from training.models import LabRun, TrainingJob
from training.services import lab as labs
from workers.models import Job

SIX = ("dpo", "bdhs", "corrupted", "kto", "mpo", "mdpo")
ONLINE = ("grpo", "reward_model", "online_dpo", "mixed_dpo")  # issue 17


def test_the_lab_names_its_methods_and_refuses_unknown_or_repeated_ones():
    assert tuple(lab_results.METHODS) == (*SIX, *ONLINE)
    # The reward model trains no policy: no role, no delta.
    assert ("start", *SIX, "grpo", "online_dpo", "mixed_dpo") == lab_results.ROLES
    assert lab_results.parse_methods(" kto, dpo ") == ("kto", "dpo")
    for bad, message in (
        ("dpo,orpo", "unknown method orpo"),
        ("dpo,dpo", "twice"),
        ("", "at least"),
    ):
        with pytest.raises(ValueError, match=message):
            lab_results.parse_methods(bad)


def _result(**costs):
    pope = {"accuracy": 0.6, "f1": 0.6, "yes_ratio": 0.7, "n": 60, "parse_failures": 0}
    sqa = {"accuracy": 0.4, "n": 10, "parse_failures": 1}
    delta = {"delta": 0.1, "ci95": [0.05, 0.15]}
    return {
        "wall_s": 12.0,
        "headline": "pope",
        "checkpoints": {r: {"name": r, "scienceqa": sqa, "pope": pope} for r in ("start", "bdhs")},
        "deltas": {"bdhs": {"scienceqa": delta, "pope": delta}},
        "costs": {"bdhs": {"judge_calls": 0, "judge_cost_usd": 0.0, "train_s": 9.5, **costs}},
    }


def test_a_lab_result_is_run_loops_shape_plus_each_methods_costs():
    lab_results.check_result(_result(generated_tokens=120))
    with pytest.raises(ValueError, match="missing generated_tokens"):
        lab_results.check_result(_result())
    with pytest.raises(ValueError, match="generated_tokens must be a count"):
        lab_results.check_result(_result(generated_tokens=-1))
    wrong = _result(generated_tokens=1)
    wrong["checkpoints"]["dpo_round2"] = wrong["checkpoints"]["start"]  # a loop role
    with pytest.raises(ValueError, match="unknown dpo_round2"):
        lab_results.check_result(wrong)
    rewarded = _result(generated_tokens=1)
    rewarded["reward_model"] = {"heldout_accuracy": 0.85}
    lab_results.check_result(rewarded)
    for bad, message in (
        ({"heldout_accuracy": 1.5}, "heldout_accuracy"),
        ({}, "missing heldout_accuracy"),
        ({"heldout_accuracy": 0.8, "auc": 0.9}, "unknown auc"),
    ):
        with pytest.raises(ValueError, match=message):
            lab_results.check_result({**rewarded, "reward_model": bad})
    wrong = _result(generated_tokens=1)
    wrong["checkpoints"]["reward_model"] = wrong["checkpoints"]["start"]
    with pytest.raises(ValueError, match="unknown reward_model"):
        lab_results.check_result(wrong)


def test_the_delta_chart_draws_losses_left_of_zero_and_no_bar_for_a_missing_value():
    svg = deltas_svg(
        ["DPO", "KTO", "<b>"], [0.2, -0.05, None], [[0.1, 0.3], [-0.1, 0.0], None], "pope"
    )
    assert svg.count('class="bar"') == 2 and "n/a" in svg and "<b>" not in svg
    assert "+20.0 [+10.0, +30.0]" in svg and "-5.0" in svg


@pytest.mark.django_db
def test_staff_launch_a_lab_from_its_page_onto_the_gpu_queue(
    client, staff_user, curator, monkeypatch
):
    sent = []
    monkeypatch.setattr(labs, "job_enqueue", sent.append)
    url = reverse("training:labs")
    client.force_login(curator)
    assert client.get(url).status_code in (302, 403)
    client.force_login(staff_user)
    page = client.get(url)
    assert page.status_code == 200 and b"Launch the lab" in page.content
    form = {
        "methods": ["bdhs", "dpo"],
        "pool_images": 40,
        "eval_images": 10,
        "k": 4,
        "temperature": 0.7,
        "steps": 5,
        "bdhs_rho": 0.99,
        "seed": 0,
    }
    # Bad input changes nothing: a K of 1 makes no pairs.
    bad = client.post(url, {**form, "k": 1})
    assert bad.status_code == 200 and not LabRun.objects.exists() and not Job.objects.exists()
    response = client.post(url, form)
    lab = LabRun.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse(
        "training:lab", args=[lab.pk]
    )
    assert lab.config["methods"] == ["dpo", "bdhs"]  # the lab's order, whatever the form's
    assert lab.job.kind == Job.Kind.LAB and lab.job.queue == "gpu" and sent == [lab.job]
    assert lab.job.params == {"lab_id": lab.pk} and lab.status == LabRun.Status.QUEUED
    detail = client.get(reverse("training:lab", args=[lab.pk]))
    assert detail.status_code == 200 and b'data-method="bdhs"' in detail.content
    # A lab still queued is not resumed twice.
    with pytest.raises(ValueError, match="wait for it or cancel it"):
        labs.lab_resume(lab=lab, enqueue=False)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_lab_runs_every_method_a_failure_spares_the_rest_and_resume_finishes(
    settings, tmp_path, start_cache, capsys, monkeypatch, client, staff_user
):
    settings.CHECKPOINT_ROOT = tmp_path / "checkpoints"
    settings.START_CACHE_DIR = str(start_cache)
    # KTO fails on its first try: its training is launched with an impossible learning rate.
    broken = dict(labs.PLANS)
    broken["kto"] = ("kto", "kto", {"learning_rate": -1.0})
    monkeypatch.setattr(labs, "PLANS", broken)
    sizes = ["--eval-images", "40", "--pool-images", "240", "--steps", "40"]
    call_command("lab", "--methods", ",".join(SIX), *sizes, "--json")
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    print(result)  # in the CI log

    lab = LabRun.objects.get()
    assert lab.status == LabRun.Status.PARTIAL and "kto" in lab.error
    assert set(result) == {"wall_s", "headline", "checkpoints", "deltas", "costs", "failed"}
    assert set(result["checkpoints"]) == {"start", "dpo", "bdhs", "corrupted", "mpo", "mdpo"}
    assert (
        set(result["deltas"]) == set(result["costs"]) == {"dpo", "bdhs", "corrupted", "mpo", "mdpo"}
    )
    assert "learning_rate" in result["failed"]["kto"]
    costs = result["costs"]
    # BDHS and the oracle corruption need no judge; the rated methods share the start's ratings.
    assert costs["bdhs"]["judge_calls"] == costs["corrupted"]["judge_calls"] == 0
    assert costs["bdhs"]["generated_tokens"] > 0 and costs["corrupted"]["generated_tokens"] == 0
    assert costs["dpo"]["judge_calls"] > 0
    assert costs["dpo"] == {**costs["mpo"], "train_s": costs["dpo"]["train_s"]}
    assert all(c["train_s"] > 0 for c in costs.values())
    for method, by_task in result["deltas"].items():
        for task, delta in by_task.items():
            low, high = delta["ci95"]
            assert low <= delta["delta"] <= high, (method, task)
    assert result["checkpoints"]["start"]["pope"]["n"] == 240
    assert all(0 <= c["pope"]["yes_ratio"] <= 1 for c in result["checkpoints"].values())
    assert set(lab.breakdown["bdhs"]["pope"]) == {"random", "popular", "adversarial"}
    assert {"f1", "yes_ratio"} <= set(lab.breakdown["bdhs"]["pope"]["random"])
    # mDPO and MPO train on the dpo pairs: one set for the three.
    methods = lab.state["methods"]
    assert (
        methods["dpo"]["version_id"]
        == methods["mpo"]["version_id"]
        == methods["mdpo"]["version_id"]
    )
    assert methods["bdhs"]["version_id"] != methods["dpo"]["version_id"]
    trained = {m: TrainingJob.objects.get(name=f"{lab.tag}-{m}") for m in methods if m != "kto"}
    assert {t.recipe for t in trained.values()} == {"dpo", "mdpo"}

    # Resumed, with KTO mended: only KTO trains; the others are kept as they were.
    monkeypatch.undo()
    jobs_before = TrainingJob.objects.count()
    call_command("lab", "--resume", str(lab.pk), "--json")
    resumed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    lab.refresh_from_db()
    assert lab.status == LabRun.Status.SUCCEEDED and "failed" not in resumed
    assert TrainingJob.objects.count() == jobs_before + 1
    assert set(resumed["checkpoints"]) == {"start", *SIX}
    assert resumed["costs"]["kto"]["judge_calls"] == costs["dpo"]["judge_calls"]
    for method in ("dpo", "bdhs", "mdpo"):
        assert resumed["deltas"][method] == result["deltas"][method]
    assert resumed["wall_s"] > result["wall_s"]

    client.force_login(staff_user)
    page = client.get(reverse("training:lab", args=[lab.pk]))
    html = page.content.decode()
    assert page.status_code == 200 and "judge calls" in html and 'data-role="mdpo"' in html
    assert html.count('class="chart"') >= 3  # the deltas, and accuracy per kind for each task
    # Each method links its set, its training run and its two evaluations.
    for name, done in lab.state["methods"].items():
        training = TrainingJob.objects.get(name=f"{lab.tag}-{name}")
        assert reverse("training:training", args=[training.pk]) in html
        for run_id in lab.state["evals"][name].values():
            assert reverse("training:evaluation", args=[run_id]) in html
        assert reverse("datasets_app:version", args=[done["version_id"]]) in html


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_online_methods_and_the_reward_model_in_the_lab(
    settings, tmp_path, start_cache, capsys, client, staff_user
):
    settings.CHECKPOINT_ROOT = tmp_path / "checkpoints"
    settings.START_CACHE_DIR = str(start_cache)
    methods = "dpo,reward_model,online_dpo,mixed_dpo,grpo"  # issue 17's command
    sizes = ["--eval-images", "40", "--pool-images", "240", "--steps", "30"]
    call_command("lab", "--methods", methods, *sizes, "--json")
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    print(result)  # in the CI log

    lab = LabRun.objects.get()
    assert lab.status == LabRun.Status.SUCCEEDED, lab.error
    assert set(result) == {"wall_s", "headline", "checkpoints", "deltas", "costs", "reward_model"}
    policies = {"dpo", "online_dpo", "mixed_dpo", "grpo"}
    assert set(result["checkpoints"]) == {"start", *policies}
    assert set(result["deltas"]) == policies
    assert set(result["costs"]) == {*policies, "reward_model"}
    assert set(result["reward_model"]) == {"heldout_accuracy"}
    assert 0 <= result["reward_model"]["heldout_accuracy"] <= 1
    costs = result["costs"]
    # The online methods pay for the start's samples (their prompts' pairs) and for what
    # they sampled while training, counted in the runner.
    sampled = costs["dpo"]["generated_tokens"]
    assert costs["online_dpo"]["generated_tokens"] > sampled
    assert costs["mixed_dpo"]["generated_tokens"] > sampled
    assert costs["online_dpo"]["judge_calls"] == costs["dpo"]["judge_calls"] > 0

    methods_state = lab.state["methods"]
    reward = TrainingJob.objects.get(name=f"{lab.tag}-reward_model")
    assert reward.recipe == "reward" and reward.config["max_steps"] == 100  # 10/3 x 30
    assert (
        methods_state["reward_model"]["heldout_accuracy"]
        == (result["reward_model"]["heldout_accuracy"])
    )
    assert "reward_model" not in lab.state["evals"]
    online = TrainingJob.objects.get(name=f"{lab.tag}-online_dpo")
    mixed = TrainingJob.objects.get(name=f"{lab.tag}-mixed_dpo")
    assert (online.config["mixed_lambda"], mixed.config["mixed_lambda"]) == (0.0, 0.5)
    history = mixed.job.metrics["training"]["history"]
    fractions = [h["online/offline_fraction"] for h in history if "online/offline_fraction" in h]
    assert fractions and 0 < sum(fractions) / len(fractions) < 1

    client.force_login(staff_user)
    html = client.get(reverse("training:lab", args=[lab.pk])).content.decode()
    assert 'data-role="online_dpo"' in html and 'data-role="reward_model"' not in html
    assert "held-out pairwise accuracy" in html
    training_page = client.get(reverse("training:training", args=[online.pk])).content.decode()
    assert "Online pairs per step" in training_page and "Online samples" in training_page


@pytest.mark.django_db
def test_a_lab_cancelled_between_methods_stops_there_and_can_be_resumed(
    settings, tmp_path, tiny_dir, monkeypatch
):
    from training.models import Checkpoint
    from workers.jobs import job_request_cancel

    settings.CHECKPOINT_ROOT = tmp_path / "checkpoints"
    start = Checkpoint.objects.create(name="tiny", model_path=str(tiny_dir))
    ran = []

    def method(self, name, *args):
        ran.append(name)
        self.state["methods"][name] = {"status": "done"}
        job_request_cancel(job=self.job_run.job)  # someone presses Cancel meanwhile

    monkeypatch.setattr(labs._Lab, "_method", method)
    config = labs.lab_config_from_options(
        methods=("dpo", "bdhs"), start_name="tiny", eval_images=10, pool_images=20, k=2
    )
    lab = labs.lab_launch(config=config, enqueue=False)
    with pytest.raises(labs.JobCancelled):
        labs._Lab(lab, labs.JobRun(_claim(lab.job)), print).run()
    lab.refresh_from_db()
    assert ran == ["dpo"] and lab.status == LabRun.Status.FAILED and lab.error == "cancelled"
    assert lab.state["methods"]["bdhs"]["status"] == "pending"
    assert lab.state["shared"]["start_id"] == start.pk and "start" in lab.state["evals"]
    # Around a real task, job_running marks the job cancelled when JobCancelled leaves it.
    lab.job.status = Job.Status.CANCELLED
    lab.job.save(update_fields=["status"])
    assert labs.lab_not_resumable(lab) == ""
    resumed = labs.lab_resume(lab=lab, enqueue=False)
    assert resumed.job.title.startswith("resume") and resumed.job.progress_total == 1


def _claim(job):
    from workers.jobs import job_claim

    return job_claim(job.pk)
