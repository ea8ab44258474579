"""Generation jobs: K samples per prompt from a checkpoint, written batch by batch."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count

from annotation.models import Completion
from datasets_app.models import Prompt
from datasets_app.selectors import prompt_selection_ids
from training.core.generation import (
    GenerationError,
    GenerationRequest,
    PromptInput,
    SamplingParams,
    TransformersBackend,
    VllmBackend,
    choose_backend_name,
    generate_batches,
)
from training.core.modeling import ModelLoadError, load_policy_cached
from training.models import Checkpoint
from training.services.checkpoints import checkpoint_paths
from workers.jobs import JobFailed, job_create, job_enqueue, job_progress, job_running
from workers.models import Job

if TYPE_CHECKING:
    from PIL import Image


def generation_launch(
    *,
    checkpoint: Checkpoint,
    selection: dict[str, Any],
    params: SamplingParams,
    backend: str = "auto",
    token_budget: int | None = None,
    user: Any = None,
    enqueue: bool = True,
) -> Job:
    """Freeze the prompt selection and parameters into a generation job on the gpu queue."""
    params.validate()
    choose_backend_name(backend, has_adapter=False)  # refuse an unknown name now
    prompt_ids = prompt_selection_ids(**selection)
    if not prompt_ids:
        raise ValueError("no prompts match this selection")
    job = job_create(
        kind=Job.Kind.GENERATION,
        title=f"{params.k} x {len(prompt_ids)} completions from {checkpoint.name}",
        total=len(prompt_ids),
        params={
            "checkpoint_id": checkpoint.pk,
            "selection": selection,
            "prompt_ids": prompt_ids,
            "sampling": asdict(params),
            "backend": backend,
            "token_budget": token_budget,
        },
        created_by=user,
    )
    if enqueue:
        job_enqueue(job)
    return job


def _complete_prompt_ids(
    checkpoint: Checkpoint, params: SamplingParams, prompt_ids: list[int]
) -> set[int]:
    rows = (
        Completion.objects.filter(
            checkpoint=checkpoint,
            template=params.template,
            sampling_hash=params.config_hash,
            prompt_id__in=prompt_ids,
            sample_index__lt=params.k,
        )
        .values("prompt_id")
        .annotate(n=Count("id"))
        .filter(n=params.k)
    )
    return {row["prompt_id"] for row in rows}


def _open_images(prompt: Prompt) -> list[Image.Image]:
    """Every image of the prompt, in conversation order."""
    from PIL import Image

    files = [prompt.image, *(extra.image for extra in prompt.more_images.all())]
    images = []
    for file in files if prompt.image else []:
        try:
            with file.open("rb") as handle:
                image = Image.open(handle)
                image.load()
            images.append(image.convert("RGB"))
        except Exception as exc:  # storage and Pillow raise many kinds; the message counts
            raise JobFailed(
                f"prompt #{prompt.pk}: its image {file.name} cannot be loaded "
                f"({type(exc).__name__}: {exc}); nothing was written for it or after it"
            ) from None
    return images


def _requests(prompt_ids: list[int], chunk: int = 64) -> Iterator[GenerationRequest]:
    for start in range(0, len(prompt_ids), chunk):
        ids = prompt_ids[start : start + chunk]
        prompts = Prompt.objects.filter(pk__in=ids).prefetch_related("more_images")
        for prompt in prompts.order_by("id"):
            images = _open_images(prompt)
            yield GenerationRequest(
                key=str(prompt.pk),
                prompt=PromptInput(prompt.question, tuple(prompt.choices), prompt.hint),
                image=images[0] if images else None,
                more_images=tuple(images[1:]),
                turns=tuple(prompt.turns),
            )


def generation_run(*, job_id: int) -> None:
    """Run (or resume) a generation job: skip complete prompts, write each batch atomically."""
    with job_running(job_id, resumable=True) as run:
        if run is None:
            return
        job = run.job
        spec = job.params
        params = SamplingParams(**spec["sampling"])
        checkpoint = Checkpoint.objects.filter(pk=spec["checkpoint_id"]).first()
        if checkpoint is None:
            raise JobFailed(f"checkpoint #{spec['checkpoint_id']} no longer exists")
        prompt_ids: list[int] = spec["prompt_ids"]
        complete = _complete_prompt_ids(checkpoint, params, prompt_ids)
        remaining = [pk for pk in prompt_ids if pk not in complete]
        job_progress(job, done=len(complete), total=len(prompt_ids))
        if complete:
            run.log(f"{len(complete)} prompts already complete: skipped")
        if not remaining:
            return

        model_path, adapter = checkpoint_paths(checkpoint)
        try:
            backend_name = choose_backend_name(spec["backend"], has_adapter=adapter is not None)
            if backend_name == "vllm":
                backend: Any = VllmBackend(model_path)
            else:
                backend = TransformersBackend(load_policy_cached(model_path, adapter_path=adapter))
        except (ModelLoadError, GenerationError) as exc:
            raise JobFailed(f"checkpoint {checkpoint.name}: {exc}") from None
        device = getattr(getattr(backend, "policy", None), "device", "cuda")
        budget = spec.get("token_budget") or (
            settings.GENERATION_TOKEN_BUDGET_GPU
            if device.startswith("cuda")
            else settings.GENERATION_TOKEN_BUDGET_CPU
        )
        run.log(f"backend {backend_name} on {device}, token budget {budget}")
        sampling = {**asdict(params), "backend": backend_name}
        started, n_completions, n_tokens = time.monotonic(), 0, 0
        try:
            batches = generate_batches(backend, _requests(remaining), params, token_budget=budget)
            for batch in batches:
                rows = [
                    Completion(
                        prompt_id=int(samples.key),
                        checkpoint=checkpoint,
                        text=text,
                        template=params.template,
                        sampling=sampling,
                        sampling_hash=params.config_hash,
                        sample_index=index,
                        job=job,
                    )
                    for samples in batch
                    for index, text in enumerate(samples.texts)
                ]
                with transaction.atomic():
                    # ignore_conflicts: a prompt finished by an earlier attempt stays as it is.
                    Completion.objects.bulk_create(rows, ignore_conflicts=True)
                n_completions += len(rows)
                n_tokens += sum(sum(s.token_counts) for s in batch)
                elapsed = max(time.monotonic() - started, 1e-9)
                run.job.metrics = {
                    **run.job.metrics,
                    "backend": backend_name,
                    "completions": n_completions,
                    "generated_tokens": n_tokens,
                    "completions_per_s": round(n_completions / elapsed, 2),
                    "tokens_per_s": round(n_tokens / elapsed, 1),
                }
                run.job.save(update_fields=["metrics"])
                run.advance(len(batch), force=True)
        except GenerationError as exc:
            raise JobFailed(str(exc)) from None
