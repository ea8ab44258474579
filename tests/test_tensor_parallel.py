"""vLLM tensor parallelism for generation (issue 19.2): `generate --tp N` reaches
`vllm.LLM(tensor_parallel_size=N)` through the job's params; bad values are refused before
a job exists. vLLM is not installed here: a stand-in module records what the backend gives
`vllm.LLM` and answers as vLLM's offline engine does."""

from __future__ import annotations

import sys
import types

import pytest
from django.core.management import CommandError, call_command

from annotation.models import Completion
from training.core.generation import (
    GenerationError,
    SamplingParams,
    VllmBackend,
    tensor_parallel_check,
    vllm_engine_args,
)
from training.core.generation import core as generation_core
from training.models import Checkpoint
from training.services import generation
from workers.models import Job

# --- pure ------------------------------------------------------------------------------------


def test_engine_args_carry_the_tensor_parallel_size():
    assert vllm_engine_args("/models/llava")["tensor_parallel_size"] == 1
    args = vllm_engine_args("/models/llava", tensor_parallel_size=4, max_images=2)
    assert args == {
        "model": "/models/llava",
        "dtype": "bfloat16",
        "max_model_len": 4096,
        "limit_mm_per_prompt": {"image": 2},
        "tensor_parallel_size": 4,
    }


@pytest.mark.parametrize("size", [0, -1, 1.5, "2", True, None])
def test_a_size_that_is_not_a_whole_number_of_gpus_is_refused(size):
    with pytest.raises(ValueError, match=r"tensor parallel size \(--tp\) must be a whole number"):
        tensor_parallel_check(size, backend="vllm")
    with pytest.raises(ValueError, match="must be a whole number"):
        vllm_engine_args("m", tensor_parallel_size=size)


@pytest.mark.parametrize("backend", ["transformers", "auto"])
def test_more_than_one_gpu_needs_the_vllm_backend_by_name(backend):
    assert tensor_parallel_check(1, backend=backend) == 1
    refused = f"--tp 2 .* vLLM only: use --backend vllm \\(not {backend}"
    with pytest.raises(ValueError, match=refused):
        tensor_parallel_check(2, backend=backend)
    assert tensor_parallel_check(8, backend="vllm") == 8


# --- the backend and the job, with a stand-in vllm -----------------------------------------


class FakeLLM:
    """vllm.LLM as the backend uses it: built with keyword arguments, `generate` answers
    each prompt with n outputs (text and token ids)."""

    built: list[dict] = []

    def __init__(self, **kwargs) -> None:
        FakeLLM.built.append(kwargs)

    def generate(self, inputs, sampling, use_tqdm=False):
        def output(i: int):
            return types.SimpleNamespace(text=f"answer {i}", token_ids=[1, 2, 3])

        return [types.SimpleNamespace(outputs=[output(i) for i in range(s.n)]) for s in sampling]


@pytest.fixture
def fake_vllm(monkeypatch):
    """A `vllm` module and a machine with 4 GPUs, as far as the backend can tell."""
    import torch

    FakeLLM.built = []
    module = types.ModuleType("vllm")
    module.LLM = FakeLLM
    module.SamplingParams = lambda **kwargs: types.SimpleNamespace(**kwargs)
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setattr(generation_core, "vllm_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    # A worker keeps one engine per process (generation service); start each test without.
    monkeypatch.setattr(generation, "_VLLM_ENGINES", {})
    return FakeLLM


@pytest.mark.slow
def test_the_backend_hands_the_size_to_vllm(tiny_dir, fake_vllm):
    VllmBackend(str(tiny_dir), tensor_parallel_size=4)
    assert fake_vllm.built[-1]["tensor_parallel_size"] == 4
    assert fake_vllm.built[-1]["model"] == str(tiny_dir)


@pytest.mark.slow
def test_the_backend_refuses_more_gpus_than_the_machine_has(tiny_dir, fake_vllm):
    with pytest.raises(GenerationError, match="--tp 8 needs 8 GPUs on one machine; this one has 4"):
        VllmBackend(str(tiny_dir), tensor_parallel_size=8)
    assert fake_vllm.built == []  # refused before vLLM starts


PARAMS = SamplingParams(k=2, temperature=0.7, max_new_tokens=4, seed=1)


@pytest.fixture
def checkpoint(db, tiny_dir):
    return Checkpoint.objects.create(name="tiny", model_path=str(tiny_dir))


@pytest.mark.slow
@pytest.mark.django_db
def test_generate_tp_reaches_vllm_through_the_job(checkpoint, shapes_source, fake_vllm, capsys):
    call_command("generate", "--tp", "2", checkpoint="tiny", source="sqa", backend="vllm", k=2)
    job = Job.objects.get()
    assert job.params["tensor_parallel_size"] == 2
    assert [b["tensor_parallel_size"] for b in fake_vllm.built] == [2]
    assert Completion.objects.count() == 2 * shapes_source.prompts.count()
    assert job.status == Job.Status.SUCCEEDED, job.error


@pytest.mark.slow
@pytest.mark.django_db
def test_a_job_from_before_tp_runs_on_one_gpu(checkpoint, shapes_source, fake_vllm):
    job = generation.generation_launch(
        checkpoint=checkpoint,
        selection={"source_id": shapes_source.pk},
        params=PARAMS,
        backend="vllm",
        enqueue=False,
    )
    del job.params["tensor_parallel_size"]
    job.save(update_fields=["params"])
    generation.generation_run(job_id=job.pk)
    assert [b["tensor_parallel_size"] for b in fake_vllm.built] == [1]
    assert Job.objects.get(pk=job.pk).status == Job.Status.SUCCEEDED


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tp", "0", "--backend", "vllm"], "must be a whole number >= 1, not 0"),
        (["--tp", "-2", "--backend", "vllm"], "must be a whole number >= 1, not -2"),
        (["--tp", "2", "--backend", "transformers"], "use --backend vllm"),
        (["--tp", "2"], r"use --backend vllm \(not auto\)"),
    ],
)
def test_bad_tp_is_refused_before_a_job_exists(shapes_source, args, message):
    Checkpoint.objects.create(name="tiny", model_path="unused")
    with pytest.raises(CommandError, match=message):
        call_command("generate", *args, checkpoint="tiny", source="sqa", enqueue=True)
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_bdhs_refuses_tp(shapes_source, monkeypatch):
    monkeypatch.setattr(generation_core, "vllm_available", lambda: True)
    checkpoint = Checkpoint.objects.create(name="tiny", model_path="unused")
    from training.core.generation.bdhs import BdhsParams

    with pytest.raises(ValueError, match="BDHS masks image attention in transformers"):
        generation.generation_launch(
            checkpoint=checkpoint,
            selection={"source_id": shapes_source.pk},
            params=PARAMS,
            backend="vllm",
            bdhs=BdhsParams(),
            tensor_parallel_size=2,
            enqueue=False,
        )
    assert not Job.objects.exists()
