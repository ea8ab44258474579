"""Generation jobs: K samples per prompt from a checkpoint, written batch by batch."""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import time
from collections.abc import Iterator
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count
from django.utils import timezone

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
    backend_name_check,
    choose_backend_name,
    generate_batches,
    tensor_parallel_check,
)
from training.core.generation.bdhs import BdhsParams, bdhs_response
from training.core.generation.guided import continue_batch
from training.core.generation.similarity import SentenceSimilarity
from training.core.modeling import ModelLoadError, load_policy_cached
from training.models import Checkpoint
from training.services.checkpoints import checkpoint_paths
from workers.chunks import ChunkRun, chunk_kind, job_fan_out, job_run_here
from workers.jobs import JobFailed, job_create, job_enqueue
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
    bdhs: BdhsParams | None = None,
    similarity_model: str = "",
    tensor_parallel_size: int = 1,
    chunk_size: int | None = None,
    user: Any = None,
    enqueue: bool = True,
) -> Job:
    """Freeze the prompt selection and parameters into a generation job on the gpu queue.

    With `bdhs`, each prompt with a reference answer gets one BDHS answer instead of K
    samples (seed 002: the rejected side of a `bdhs` dataset version). `tensor_parallel_size`
    splits the model over that many GPUs of the worker (vLLM only).

    The job runs as chunks of `chunk_size` prompts (JOB_CHUNK_SIZE unless given) that every
    worker on the gpu queue may take."""
    params.validate()
    chunk_size = chunk_size or settings.JOB_CHUNK_SIZE
    if chunk_size < 1:
        raise ValueError(f"chunk size must be at least 1, not {chunk_size}")
    tensor_parallel_check(tensor_parallel_size, backend=backend)
    backend_name_check(backend)
    prompt_ids = prompt_selection_ids(**selection)
    if not prompt_ids:
        raise ValueError("no prompts match this selection")
    if bdhs is not None:
        bdhs.validate()
        if tensor_parallel_size > 1:
            raise ValueError("BDHS masks image attention in transformers: --tp is for vLLM")
        references = Prompt.objects.filter(pk__in=prompt_ids).order_by("id")
        prompt_ids = [
            pk for pk, text in references.values_list("pk", "reference_answer") if text.strip()
        ]
        if not prompt_ids:
            raise ValueError("BDHS needs prompts with a reference answer; none is selected")
        if similarity_model:
            SentenceSimilarity(similarity_model)  # a missing folder fails now
    job = job_create(
        kind=Job.Kind.GENERATION,
        title=(
            f"BDHS answers to {len(prompt_ids)} prompts from {checkpoint.name}"
            if bdhs
            else f"{params.k} x {len(prompt_ids)} completions from {checkpoint.name}"
        ),
        total=len(prompt_ids),
        params={
            "checkpoint_id": checkpoint.pk,
            "selection": selection,
            "prompt_ids": prompt_ids,
            "sampling": asdict(params),
            "backend": backend,
            "token_budget": token_budget,
            "chunk_size": chunk_size,
            "tensor_parallel_size": tensor_parallel_size,
            **({"bdhs": asdict(bdhs), "similarity_model": similarity_model} if bdhs else {}),
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


def _plan(job: Job) -> list[int]:
    """A generation job's items: its prompts, in the frozen order; refused before any chunk
    runs when the checkpoint is gone."""
    if not Checkpoint.objects.filter(pk=job.params["checkpoint_id"]).exists():
        raise JobFailed(f"checkpoint #{job.params['checkpoint_id']} no longer exists")
    return list(job.params["prompt_ids"])


def generation_run(*, job_id: int) -> None:
    """Run (or resume) a whole generation job in this process, chunk after chunk."""
    job_run_here(job_id, _plan)


def generation_shard(*, job_id: int) -> None:
    """The gpu-queue task: send the job's unfinished chunks to every worker on its queue."""
    job_fan_out(job_id, _plan)


# The vLLM engine of this worker process, by (model, --tp): a worker that takes several
# chunks of a job starts it once (transformers policies are cached by load_policy_cached).
_VLLM_ENGINES: dict[tuple[str, int], VllmBackend] = {}


def _backend(checkpoint: Checkpoint, spec: dict[str, Any]) -> tuple[str, Any]:
    model_path, adapter = checkpoint_paths(checkpoint)
    name = choose_backend_name(spec["backend"], has_adapter=adapter is not None)
    if name != "vllm":
        return name, TransformersBackend(load_policy_cached(model_path, adapter_path=adapter))
    key = (str(model_path), spec.get("tensor_parallel_size", 1))  # absent before --tp
    if key not in _VLLM_ENGINES:
        _VLLM_ENGINES.clear()  # one engine holds the GPUs' memory
        _VLLM_ENGINES[key] = VllmBackend(str(model_path), tensor_parallel_size=key[1])
    return name, _VLLM_ENGINES[key]


def _generation_chunk(run: ChunkRun) -> None:
    """One chunk: skip its complete prompts, write each batch of the rest atomically."""
    spec = run.job.params
    params = SamplingParams(**spec["sampling"])
    checkpoint = Checkpoint.objects.filter(pk=spec["checkpoint_id"]).first()
    if checkpoint is None:
        raise JobFailed(f"checkpoint #{spec['checkpoint_id']} no longer exists")
    if spec.get("bdhs"):
        _bdhs_chunk(run, checkpoint, params, spec)
        return
    complete = _complete_prompt_ids(checkpoint, params, run.items)
    remaining = [pk for pk in run.items if pk not in complete]
    run.set_done(len(complete))
    if complete:
        run.log(f"{len(complete)} prompts already complete: skipped")
    if not remaining:
        return
    try:
        backend_name, backend = _backend(checkpoint, spec)
    except (ModelLoadError, GenerationError) as exc:
        raise JobFailed(f"checkpoint {checkpoint.name}: {exc}") from None
    device = getattr(getattr(backend, "policy", None), "device", "cuda")
    budget = spec.get("token_budget") or (
        settings.GENERATION_TOKEN_BUDGET_GPU
        if device.startswith("cuda")
        else settings.GENERATION_TOKEN_BUDGET_CPU
    )
    run.heartbeat()  # loading the model may have taken a while
    sampling = {**asdict(params), "backend": backend_name}
    n_completions, n_tokens = 0, 0
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
                    job=run.job,
                )
                for samples in batch
                for index, text in enumerate(samples.texts)
            ]
            with transaction.atomic():
                # ignore_conflicts: a prompt finished by an earlier attempt stays as it is.
                Completion.objects.bulk_create(rows, ignore_conflicts=True)
            n_completions += len(rows)
            n_tokens += sum(sum(s.token_counts) for s in batch)
            run.set_metrics(
                backend=backend_name, completions=n_completions, generated_tokens=n_tokens
            )
            run.advance(len(batch), force=True)
    except GenerationError as exc:
        raise JobFailed(str(exc)) from None


def _merge_metrics(job: Job, chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """The job's figures from its chunks': counts add up, rates are over the job's wall time
    (several workers at once make it shorter than the chunks' summed seconds)."""
    done = [m for m in chunks if m]
    if not done:
        return {}
    if any(m.get("method") == "bdhs" for m in done):
        return _merge_bdhs(done)
    completions = sum(m.get("completions", 0) for m in done)
    tokens = sum(m.get("generated_tokens", 0) for m in done)
    wall = max((timezone.now() - job.started_at).total_seconds(), 1e-9)
    return {
        "backend": done[0].get("backend", ""),
        "completions": completions,
        "generated_tokens": tokens,
        "completions_per_s": round(completions / wall, 2),
        "tokens_per_s": round(tokens / wall, 1),
    }


chunk_kind(Job.Kind.GENERATION, _generation_chunk, _merge_metrics)


def bdhs_sampling_hash(params: SamplingParams, bdhs: BdhsParams) -> str:
    """What makes two BDHS answers the same: the sampling and every BDHS setting."""
    payload = json.dumps([params.config_hash, asdict(bdhs)], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def _bdhs_chunk(run: ChunkRun, checkpoint: Checkpoint, params: SamplingParams, spec: dict) -> None:
    """One BDHS answer per prompt (seed 002, Algorithm 1), each written as it is done; a
    resumed chunk skips the prompts answered already."""
    bdhs = BdhsParams(**spec["bdhs"])
    sampling_hash = bdhs_sampling_hash(params, bdhs)
    done = set(
        Completion.objects.filter(
            checkpoint=checkpoint, sampling_hash=sampling_hash, prompt_id__in=run.items
        ).values_list("prompt_id", flat=True)
    )
    remaining = [pk for pk in run.items if pk not in done]
    run.set_done(len(done))
    if not remaining:
        return
    model_path, adapter = checkpoint_paths(checkpoint)
    try:
        policy = load_policy_cached(model_path, adapter_path=adapter)
        similarity = SentenceSimilarity(spec.get("similarity_model") or None)
    except (ModelLoadError, ValueError) as exc:
        raise JobFailed(f"checkpoint {checkpoint.name}: {exc}") from None
    references = dict(Prompt.objects.filter(pk__in=remaining).values_list("pk", "reference_answer"))
    run.log(f"BDHS on {len(remaining)} prompts: {asdict(bdhs)}")
    tries, guided, similar = 0, 0, 0.0
    tokens = [0]  # every try's tokens, counted by _continuation
    started = time.monotonic()
    for n, request in enumerate(_requests(remaining), start=1):
        rng = random.Random(f"bdhs:{params.seed}:{request.key}")  # noqa: S311 - sampling
        try:
            result = bdhs_response(
                references[int(request.key)],
                _continuation(policy, request, params, bdhs, tokens),
                similarity,
                rng,
                bdhs,
            )
        except GenerationError as exc:
            raise JobFailed(str(exc)) from None
        record = {
            "tries": result.tries,
            "guided": result.guided,
            "similarity": round(result.similarity, 4),
            "similarities": [round(s, 4) for s in result.similarities],
        }
        Completion.objects.create(
            prompt_id=int(request.key),
            checkpoint=checkpoint,
            text=result.text,
            template=params.template,
            sampling={**asdict(params), "method": "bdhs", "bdhs": asdict(bdhs), **record},
            sampling_hash=sampling_hash,
            sample_index=0,
            job=run.job,
        )
        tries += result.tries
        guided += result.guided
        similar += result.similarity
        # Sums, so that the job's means weigh every chunk by its answers.
        run.set_metrics(
            method="bdhs",
            completions=n,
            sum_tries=tries,
            sum_guided=guided,
            sum_similarity=similar,
            generated_tokens=tokens[0],
            seconds=round(time.monotonic() - started, 1),
        )
        run.advance(1, force=True)


def _merge_bdhs(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    n = sum(m.get("completions", 0) for m in chunks)
    if not n:
        return {"method": "bdhs", "completions": 0}
    return {
        "method": "bdhs",
        "completions": n,
        "mean_tries": round(sum(m["sum_tries"] for m in chunks) / n, 3),
        "guided_share": round(sum(m["sum_guided"] for m in chunks) / n, 3),
        "mean_similarity": round(sum(m["sum_similarity"] for m in chunks) / n, 4),
        "generated_tokens": sum(m.get("generated_tokens", 0) for m in chunks),
        "seconds": round(sum(m.get("seconds", 0) for m in chunks), 1),
    }


def _continuation(
    policy: Any,
    request: GenerationRequest,
    params: SamplingParams,
    bdhs: BdhsParams,
    tokens: list[int],
) -> Any:
    """BDHS's `continue_fn` for one prompt; each call is a new try, seeded by its number.
    `tokens[0]` adds up what every try wrote (its text re-tokenized: the cost of BDHS in
    generated tokens, tries that were sampled again included)."""
    attempts = itertools.count()
    tokenizer = policy.processor.tokenizer

    def continue_fn(prefixes: Any, guided: bool) -> list[str]:
        # A guided try writes one sentence per prefix; the unguided last one a whole
        # answer, with the job's own token limit.
        limit = bdhs.max_new_tokens if guided else params.max_new_tokens
        texts = continue_batch(
            policy,
            request,
            prefixes,
            params=replace(params, k=1, max_new_tokens=limit),
            rho=0.0 if bdhs.noisy_image else bdhs.rho,
            noise_steps=bdhs.noise_steps if bdhs.noisy_image else 0,
            attempt=next(attempts),
        )
        if texts:
            written = tokenizer(texts, add_special_tokens=False)["input_ids"]
            tokens[0] += sum(len(ids) for ids in written)
        return texts

    return continue_fn
