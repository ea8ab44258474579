"""Training over several machines (issue 19.2): the `accelerate launch` command line each
machine builds, read back by the installed accelerate's own parser; the shipped DeepSpeed
configs; the worker settings; the rank-0 worker and `train_follow` on the other machines
meeting on one job, end to end on 127.0.0.1 with gloo."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import pytest
import yaml
from django.core.management import CommandError, call_command
from django.db import connection

from datasets_app.models import DatasetRow, DatasetVersion
from tests import factories
from tests.conftest import free_port
from tests.processes import settings_in_subprocess
from training.core import runs
from training.core.runs import ACCELERATE_CONFIGS, ZERO_STAGES, Machines, launch_command
from training.models import Checkpoint, TrainingJob
from training.services import machines, trainings
from workers.core.supervisor import Outcome
from workers.models import Job

ROOT = Path(__file__).resolve().parent.parent
TWO = {"count": 2, "main_address": "10.0.0.1", "main_port": 29500}


def _accelerate_reads(command: list[str]):
    """What `accelerate launch` makes of our arguments: its parser, then the step that
    merges the --config_file (the config's values under the command line's)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    assert command[1:3] == ["-m", "accelerate.commands.launch"]
    args, _, _ = _validate_launch_command(launch_command_parser().parse_args(command[3:]))
    return args


# --- the command line: pure ----------------------------------------------------------------


def test_one_machine_commands_are_unchanged():
    one = Machines()
    assert launch_command("c.json", machines=one, python="py") == [
        "py",
        "-m",
        "training.run",
        "c.json",
    ]
    assert launch_command("c.json", gpus=4, machines=one, python="py") == [
        "py",
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        "4",
        "--multi_gpu",
        "--module",
        "training.run",
        "c.json",
    ]
    zero = launch_command("c.json", gpus=2, zero="zero2", python="py")
    assert zero == [
        "py",
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        "2",
        "--config_file",
        str(ACCELERATE_CONFIGS / "deepspeed_zero2.yaml"),
        "--module",
        "training.run",
        "c.json",
    ]


@pytest.mark.parametrize("rank", [0, 1])
def test_two_machines_differ_only_in_their_rank(rank):
    command = launch_command(
        "runs/x/job-config.json", gpus=8, zero="zero3", machines=Machines(rank=rank, **TWO)
    )
    assert command == [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_machines",
        "2",
        "--machine_rank",
        str(rank),
        "--main_process_ip",
        "10.0.0.1",
        "--main_process_port",
        "29500",
        "--num_processes",
        "16",
        "--config_file",
        str(ACCELERATE_CONFIGS / "deepspeed_zero3.yaml"),
        "--module",
        "training.run",
        "runs/x/job-config.json",
    ]


@pytest.mark.parametrize(("count", "gpus"), [(1, 4), (2, 1), (2, 8), (3, 2), (4, 8)])
def test_num_processes_is_machines_times_gpus_per_machine(count, gpus):
    command = launch_command(
        "c.json", gpus=gpus, zero="zero2", machines=Machines(count=count, main_address="h")
    )
    assert command[command.index("--num_processes") + 1] == str(count * gpus)


@pytest.mark.parametrize(
    ("machines", "message"),
    [
        (Machines(count=2), "training on 2 machines needs TRAIN_MAIN_ADDRESS"),
        (Machines(count=2, main_address="  "), "needs TRAIN_MAIN_ADDRESS"),
        (Machines(count=0), "TRAIN_NUM_MACHINES must be at least 1, not 0"),
        (Machines(count=2, rank=2, main_address="h"), r"TRAIN_MACHINE_RANK must be in \[0, 1\]"),
        (Machines(rank=-1), r"TRAIN_MACHINE_RANK must be in \[0, 0\]"),
        (Machines(count=2, main_address="h", main_port=0), "TRAIN_MAIN_PORT must be a TCP port"),
        (Machines(count=2, main_address="h", main_port=70000), "TRAIN_MAIN_PORT"),
    ],
)
def test_settings_that_cannot_work_are_refused_naming_the_setting(machines, message):
    with pytest.raises(ValueError, match=message):
        launch_command("c.json", gpus=2, zero="zero2", machines=machines)


def test_accelerate_reads_the_two_machine_deepspeed_command_as_meant():
    from accelerate.utils.launch import prepare_deepspeed_cmd_env

    port = free_port()  # rank 0's launcher checks that the port is free
    seen = []
    for rank in (0, 1):
        machine = Machines(count=2, rank=rank, main_address="10.0.0.1", main_port=port)
        args = _accelerate_reads(launch_command("c.json", gpus=8, zero="zero3", machines=machine))
        assert args.use_deepspeed and args.deepspeed_multinode_launcher == "standard"
        assert (args.num_machines, args.machine_rank, args.num_processes) == (2, rank, 16)
        assert (args.module, args.training_script, args.training_script_args) == (
            True,
            "training.run",
            ["c.json"],
        )
        # The torchrun arguments accelerate derives (what `accelerate launch` would run).
        args.deepspeed_fields_from_accelerate_config = ""
        _, env = prepare_deepspeed_cmd_env(args)
        seen.append((args.nproc_per_node, args.nnodes, args.node_rank, args.rdzv_endpoint))
        assert env["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == "3"
    assert seen == [("8", "2", 0, f"10.0.0.1:{port}"), ("8", "2", 1, f"10.0.0.1:{port}")]


def test_accelerate_reads_the_two_machine_data_parallel_command_as_meant():
    from accelerate.utils.launch import prepare_multi_gpu_env

    machine = Machines(count=2, rank=1, main_address="10.0.0.1", main_port=free_port())
    args = _accelerate_reads(launch_command("c.json", gpus=4, machines=machine))
    assert args.multi_gpu and not args.use_deepspeed
    prepare_multi_gpu_env(args)
    assert (args.nproc_per_node, args.nnodes, args.node_rank) == ("4", "2", 1)


# --- the shipped accelerate configs ----------------------------------------------------------


@pytest.mark.parametrize("zero", sorted(ZERO_STAGES))
def test_deepspeed_configs_carry_what_a_multi_machine_launch_needs(zero):
    from accelerate.commands.config.config_args import load_config_from_file

    path = ACCELERATE_CONFIGS / ZERO_STAGES[zero]
    raw = yaml.safe_load(path.read_text())
    config = load_config_from_file(str(path))  # accelerate's own reader refuses bad keys
    assert config.compute_environment == "LOCAL_MACHINE"
    assert config.distributed_type == "DEEPSPEED"
    # `standard`: each machine runs its own launcher with --machine_rank. Anything else
    # makes rank 0 start the others over ssh (pdsh, mpi), which this project does not do.
    assert config.deepspeed_config["deepspeed_multinode_launcher"] == "standard"
    assert raw["rdzv_backend"] == "static"
    # One-machine values that the command line overrides on several machines.
    assert (config.num_machines, config.machine_rank, config.num_processes) == (1, 0, 1)
    assert config.deepspeed_config["zero_stage"] in (2, 3)


def test_every_zero_stage_has_its_config_file():
    assert {p.name for p in ACCELERATE_CONFIGS.glob("*.yaml")} == set(ZERO_STAGES.values())


# --- worker settings -------------------------------------------------------------------------


def test_worker_settings_come_from_the_environment(tmp_path):
    names = "s.TRAIN_NUM_MACHINES, s.TRAIN_MACHINE_RANK, s.TRAIN_MAIN_ADDRESS, s.TRAIN_MAIN_PORT"
    unset = {
        "VAR_DIR": str(tmp_path),
        "TRAIN_NUM_MACHINES": "",
        "TRAIN_MACHINE_RANK": "",
        "TRAIN_MAIN_ADDRESS": "",
        "TRAIN_MAIN_PORT": "",
    }
    assert settings_in_subprocess(unset, names) == "1 0  29500"
    two = {
        **unset,
        "TRAIN_NUM_MACHINES": "2",
        "TRAIN_MACHINE_RANK": "1",
        "TRAIN_MAIN_ADDRESS": "node0",
        "TRAIN_MAIN_PORT": "29600",
    }
    assert settings_in_subprocess(two, names) == "2 1 node0 29600"


# --- the job: rank 0's worker and train_follow -----------------------------------------------


@pytest.fixture
def launchable(db, tmp_path):
    """A ready DPO version with one row (no image) and a base folder with a config."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    version = DatasetVersion.objects.create(
        name="pairs", kind="dpo", status="ready", strategy="best_vs_worst"
    )
    DatasetRow.objects.create(
        version=version,
        prompt=factories.prompt(),
        position=0,
        question="q",
        chosen="a",
        rejected="b",
    )
    return version, Checkpoint.objects.create(name="base", model_path=str(model))


def _launch(launchable, **extra) -> TrainingJob:
    version, base = launchable
    return trainings.training_launch(
        recipe="dpo", dataset_version=version, base_checkpoint=base, enqueue=False, **extra
    )


def _two_machines(settings, rank: int = 0, port: int = 29500) -> None:
    settings.TRAIN_NUM_MACHINES = 2
    settings.TRAIN_MACHINE_RANK = rank
    settings.TRAIN_MAIN_ADDRESS = "127.0.0.1"
    settings.TRAIN_MAIN_PORT = port


class Commands:
    """`supervise` for tests: records each command, ends it with `code`."""

    def __init__(self, code: int = 0) -> None:
        self.seen: list[list[str]] = []
        self.code = code
        self.should_stop: list = []

    def __call__(self, command, *, should_stop, **kwargs) -> Outcome:
        self.seen.append(list(command))
        self.should_stop.append(should_stop)
        return Outcome(returncode=self.code, stopped=False)


@pytest.mark.django_db
def test_one_machine_worker_runs_the_job_as_before(launchable, monkeypatch):
    training = _launch(launchable, gpus=2, zero="zero2")
    commands = Commands(code=1)
    monkeypatch.setattr(trainings, "supervise", commands)
    trainings.training_run(job_id=training.job_id)
    config = Path(training.output_dir) / "job-config.json"
    assert commands.seen == [launch_command(config, gpus=2, zero="zero2")]
    assert "launch" not in Job.objects.get(pk=training.job_id).metrics


@pytest.mark.django_db
def test_rank_0_launches_and_records_where_the_others_join(launchable, settings, monkeypatch):
    _two_machines(settings)
    training = _launch(launchable, gpus=4, zero="zero3")
    commands = Commands(code=1)
    monkeypatch.setattr(trainings, "supervise", commands)
    trainings.training_run(job_id=training.job_id)

    job = Job.objects.get(pk=training.job_id)
    config = Path(training.output_dir) / "job-config.json"
    assert config.is_file()
    rank0 = launch_command(
        config, gpus=4, zero="zero3", machines=Machines(2, 0, "127.0.0.1", 29500)
    )
    assert commands.seen == [rank0]
    assert job.metrics["launch"] == {
        "machines": 2,
        "main_address": "127.0.0.1",
        "main_port": 29500,
        "attempt": 1,
    }
    assert "on 2 machines" in job.log_tail and "train_follow" in job.log_tail


@pytest.mark.django_db
def test_a_follower_joins_the_running_attempt_with_its_own_rank(launchable, settings, monkeypatch):
    _two_machines(settings)
    training = _launch(launchable, gpus=4, zero="zero3")
    monkeypatch.setattr(trainings, "supervise", Commands(code=1))
    trainings.training_run(job_id=training.job_id)  # rank 0 wrote its record, then failed
    # As while rank 0's processes still run: the job is running, this attempt recorded.
    Job.objects.filter(pk=training.job_id).update(status=Job.Status.RUNNING)
    follower = Commands(code=0)
    monkeypatch.setattr(machines, "supervise", follower)
    said: list[str] = []

    assert machines.training_follow(rank=1, poll_s=0.01, max_jobs=1, say=said.append) == 1
    config = Path(training.output_dir) / "job-config.json"
    assert follower.seen == [
        launch_command(config, gpus=4, zero="zero3", machines=Machines(2, 1, "127.0.0.1", 29500))
    ]
    assert said[0].startswith(f"joining {training.name}") and "exit code 0" in said[1]
    # It stops its processes when the job stops running (cancel, failure, a new attempt).
    should_stop = follower.should_stop[0]
    assert not should_stop()
    Job.objects.filter(pk=training.job_id).update(cancel_requested=True)
    assert should_stop()
    # An attempt joined once is not joined again; a resumed attempt is, once rank 0 records it.
    assert machines.training_to_join(rank=1, joined={(training.job_id, 1)}) is None
    Job.objects.filter(pk=training.job_id).update(attempts=2)
    assert machines.training_to_join(rank=1, joined=set()) is None


@pytest.mark.django_db
def test_a_job_with_no_main_address_fails_before_anything_runs(launchable, settings, monkeypatch):
    _two_machines(settings)
    settings.TRAIN_MAIN_ADDRESS = ""
    training = _launch(launchable, gpus=2, zero="zero2")
    commands = Commands()
    monkeypatch.setattr(trainings, "supervise", commands)
    trainings.training_run(job_id=training.job_id)
    job = Job.objects.get(pk=training.job_id)
    assert job.status == Job.Status.FAILED and commands.seen == []
    assert "training on 2 machines needs TRAIN_MAIN_ADDRESS" in job.error
    assert not (Path(training.output_dir) / "data").exists()  # nothing exported either


@pytest.mark.django_db
def test_a_worker_of_another_rank_does_not_run_a_training_job(launchable, settings, monkeypatch):
    _two_machines(settings, rank=1)
    training = _launch(launchable)
    commands = Commands()
    monkeypatch.setattr(trainings, "supervise", commands)
    trainings.training_run(job_id=training.job_id)
    job = Job.objects.get(pk=training.job_id)
    assert job.status == Job.Status.FAILED and commands.seen == []
    assert "rank-0 machine's gpu worker" in job.error


@pytest.mark.django_db
def test_train_follow_refuses_rank_0_and_bad_settings(settings):
    with pytest.raises(CommandError, match="TRAIN_MACHINE_RANK to 1 or more"):
        call_command("train_follow", "--once")
    settings.TRAIN_MACHINE_RANK = 1  # on one machine: no rank 1
    with pytest.raises(CommandError, match=r"TRAIN_MACHINE_RANK must be in \[0, 0\]"):
        call_command("train_follow", "--once")


@pytest.mark.django_db(transaction=True)
def test_two_machines_on_one_host_train_one_job_together(launchable, settings, monkeypatch):
    """The real launcher, twice: the rank-0 worker's training_run and a follower thread
    (machine 1) each start `accelerate launch`; their processes meet at 127.0.0.1:PORT
    in one gloo group. The runner is the probe (tests/multinode_runner.py)."""
    _two_machines(settings, port=free_port())
    monkeypatch.setattr(runs, "RUNNER_MODULE", "tests.multinode_runner")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    training = _launch(launchable, gpus=2)

    def machine_1() -> None:
        try:
            machines.training_follow(rank=1, poll_s=0.1, max_jobs=1, say=lambda line: None)
        finally:
            connection.close()  # the thread's own connection

    follower = threading.Thread(target=machine_1, daemon=True)
    follower.start()
    trainings.training_run(job_id=training.job_id, poll_s=0.2)
    follower.join(timeout=120)

    job = Job.objects.get(pk=training.job_id)
    out = Path(training.output_dir)
    assert job.status == Job.Status.SUCCEEDED, (job.error, job.log_tail)
    assert not follower.is_alive()
    seen = [json.loads((out / f"probe.rank{r}.json").read_text()) for r in range(4)]
    assert [(s["rank"], s["machine"], s["local_rank"]) for s in seen] == [
        (0, 0, 0),
        (1, 0, 1),
        (2, 1, 0),
        (3, 1, 1),
    ]
    assert all(s["world"] == 4 and s["rank_sum"] == 6 for s in seen)
    assert (out / "runner.machine1.log").is_file()
    assert Checkpoint.objects.filter(training_job=training).exists()
