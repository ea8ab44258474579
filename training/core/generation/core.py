"""Batched K-sample generation behind one small backend protocol.

`generate_batches` packs prompts into batches under a token budget (left padding means a
batch costs rows x longest prompt), asks the backend for K samples of each, and halves the
batch when the device runs out of memory. Backends: transformers (CPU or GPU) and vLLM.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from datasets_app.core.conversation import prompt_messages
from training.core.generation.sampling import SamplingParams, make_row_sampler, row_seed
from training.core.generation.templates import PromptInput, render_prompt
from training.core.modeling import encode_prompts

if TYPE_CHECKING:
    from PIL import Image

    from training.core.modeling import LoadedPolicy


class GenerationError(RuntimeError):
    """Generation cannot go on; the message is meant for the job page."""


@dataclass(frozen=True)
class GenerationRequest:
    key: str  # stable id of the prompt: seeds its samples
    prompt: PromptInput  # the final user turn
    image: Image.Image | None = None  # the first image
    # A conversation's later images and earlier turns (datasets_app/core/conversation.py).
    more_images: tuple[Image.Image, ...] = ()
    turns: tuple[dict[str, Any], ...] = ()

    @property
    def images(self) -> list[Image.Image]:
        return [] if self.image is None else [self.image, *self.more_images]


@dataclass
class GeneratedSamples:
    key: str
    texts: list[str]
    token_counts: list[int] = field(default_factory=list)


class GenerationBackend(Protocol):
    name: str

    def prompt_tokens(self, request: GenerationRequest, params: SamplingParams) -> int: ...

    def generate(
        self, requests: Sequence[GenerationRequest], params: SamplingParams
    ) -> list[GeneratedSamples]: ...


def clean_text(text: str) -> str:
    # NUL can come out of byte-level tokens; PostgreSQL text columns refuse it.
    return text.replace("\x00", "").strip()


def is_out_of_memory(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def pack_batches(
    requests: Iterable[GenerationRequest],
    params: SamplingParams,
    token_budget: int,
    count_tokens: Callable[[GenerationRequest], int],
) -> Iterator[list[GenerationRequest]]:
    """Group requests so that rows x (longest prompt + new tokens) stays within the budget."""
    batch: list[GenerationRequest] = []
    longest = 0
    iterator = iter(requests)
    while True:
        try:
            request = next(iterator)
        except StopIteration:
            break
        except Exception:
            # A request that cannot be built (an unreadable image) ends the stream; the
            # batch gathered before it is still whole, so hand it over first.
            if batch:
                yield batch
            raise
        length = count_tokens(request)
        grown = max(longest, length)
        cost = (len(batch) + 1) * params.k * (grown + params.max_new_tokens)
        if batch and cost > token_budget:
            yield batch
            batch, grown = [], length
        batch.append(request)
        longest = grown
    if batch:
        yield batch


def generate_batches(
    backend: GenerationBackend,
    requests: Iterable[GenerationRequest],
    params: SamplingParams,
    *,
    token_budget: int,
) -> Iterator[list[GeneratedSamples]]:
    """Yield the samples of each batch as soon as it is done (so callers can save them)."""
    params.validate()
    for batch in pack_batches(
        requests, params, token_budget, lambda r: backend.prompt_tokens(r, params)
    ):
        yield from _generate_halving(backend, batch, params)


def _generate_halving(
    backend: GenerationBackend, batch: list[GenerationRequest], params: SamplingParams
) -> Iterator[list[GeneratedSamples]]:
    try:
        yield backend.generate(batch, params)
        return
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        _free_device_memory()
        if len(batch) == 1:
            raise GenerationError(
                f"out of device memory generating K={params.k} samples of up to "
                f"{params.max_new_tokens} tokens for a single prompt: lower K or "
                "max_new_tokens, or use a GPU with more memory"
            ) from exc
    half = len(batch) // 2
    yield from _generate_halving(backend, batch[:half], params)
    yield from _generate_halving(backend, batch[half:], params)


def _free_device_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# --- transformers ------------------------------------------------------------------------------


def _conversation(request: GenerationRequest, template: str) -> list[dict[str, Any]]:
    """The whole conversation up to the turn to answer; the template shapes that turn."""
    text = render_prompt(template, request.prompt)
    return prompt_messages(request.turns, text, len(request.images))


def chat_text(
    processor: Any, request: GenerationRequest, params: SamplingParams, prefill: str = ""
) -> str:
    """The prompt text up to where the model writes: the chat template with its generation
    prompt, and for steered SteerLM generation the attribute string and its newline (the
    layout the SteerLM recipe trained on: the label opens the assistant turn); `prefill`,
    text the answer opens with that the model continues (BDHS's reference-guided tries)."""
    conversation = _conversation(request, params.template)
    if not params.steer and not prefill:
        return processor.apply_chat_template(conversation, add_generation_prompt=True)
    # The assistant turn as the SteerLM export writes it (the label, then the response as
    # its own text part), cut where the response starts: the template's own spacing after
    # "ASSISTANT:" stays, so the steered prompt is token for token what training saw.
    opening = [{"type": "text", "text": f"{params.steer}\n"}] if params.steer else []
    opened = {
        "role": "assistant",
        "content": [*opening, {"type": "text", "text": prefill + _RESPONSE_MARK}],
    }
    text = processor.apply_chat_template([*conversation, opened])
    return text[: text.rindex(_RESPONSE_MARK)]


_RESPONSE_MARK = "\u241eRESPONSE\u241e"  # a character no template writes


class TransformersBackend:
    """`model.generate` on the loaded policy; bf16 on GPU (as loaded), float32 on CPU."""

    name = "transformers"

    def __init__(self, policy: LoadedPolicy) -> None:
        self.policy = policy
        # Image tokens by image size: fixed per family for LLaVA-1.5 (576), but a function of
        # the resolution for Qwen2-VL and LLaVA-NeXT; the processor knows, so it is asked.
        self._image_tokens: dict[tuple[int, int], int] = {}

    def _text(self, request: GenerationRequest, params: SamplingParams) -> str:
        return chat_text(self.policy.processor, request, params)

    def prompt_tokens(self, request: GenerationRequest, params: SamplingParams) -> int:
        processor = self.policy.processor
        n = len(
            processor.tokenizer(self._text(request, params), add_special_tokens=False).input_ids
        )
        return n + sum(self._expanded_tokens(image) for image in request.images)

    def _expanded_tokens(self, image: Image.Image) -> int:
        """Tokens the processor adds for `image` beyond its placeholder in the text."""
        if image.size not in self._image_tokens:
            processor = self.policy.processor
            text = processor.apply_chat_template(
                [{"role": "user", "content": [{"type": "image"}]}], add_generation_prompt=False
            )
            plain = len(processor.tokenizer(text, add_special_tokens=False).input_ids)
            expanded = processor(
                text=[text], images=[image.convert("RGB")], add_special_tokens=False
            )
            self._image_tokens[image.size] = len(expanded["input_ids"][0]) - plain
        return self._image_tokens[image.size]

    def generate(
        self, requests: Sequence[GenerationRequest], params: SamplingParams
    ) -> list[GeneratedSamples]:
        # The processor takes images for all rows or for none: run the two kinds apart.
        with_image = [r for r in requests if r.image is not None]
        without = [r for r in requests if r.image is None]
        done = {}
        for group in (with_image, without):
            if group:
                for samples in self._generate_group(group, params):
                    done[samples.key] = samples
        return [done[r.key] for r in requests]

    def _generate_group(
        self, requests: Sequence[GenerationRequest], params: SamplingParams
    ) -> list[GeneratedSamples]:
        import torch

        policy = self.policy
        texts = [self._text(r, params) for r in requests]
        # One flat list, in row order: the processor hands them to the image places in turn.
        images = [image for r in requests for image in r.images] or None
        inputs = encode_prompts(policy, texts, images)
        seeds = [row_seed(params.seed, r.key, j) for r in requests for j in range(params.k)]
        kwargs = generate_kwargs(policy, params, seeds)
        if params.temperature > 0:
            kwargs["num_return_sequences"] = params.k
        with torch.inference_mode():
            output = policy.model.generate(**inputs, **kwargs)
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        tokenizer = policy.processor.tokenizer
        decoded = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        counts = _generated_lengths(new_tokens, tokenizer.eos_token_id, tokenizer.pad_token_id)
        k = params.k
        return [
            GeneratedSamples(
                key=r.key,
                texts=[clean_text(t) for t in decoded[i * k : (i + 1) * k]],
                token_counts=counts[i * k : (i + 1) * k],
            )
            for i, r in enumerate(requests)
        ]


def generate_kwargs(policy: LoadedPolicy, params: SamplingParams, seeds: list[int]) -> dict:
    """`model.generate` keyword arguments: greedy at temperature 0, else the row sampler
    (one seed per output row) with the library's own warpers neutral, since the sampler
    has drawn already."""
    kwargs: dict[str, Any] = {
        "max_new_tokens": params.max_new_tokens,
        "pad_token_id": policy.processor.tokenizer.pad_token_id,
    }
    if params.temperature <= 0:
        return kwargs | {"do_sample": False}
    sampler = make_row_sampler(
        seeds, params.temperature, params.top_p, params.max_new_tokens, policy.device
    )
    return kwargs | {
        "do_sample": True,
        "logits_processor": [sampler],
        "temperature": 1.0,
        "top_p": 1.0,
        "top_k": 0,
    }


def _generated_lengths(new_tokens: Any, eos_id: int | None, pad_id: int | None) -> list[int]:
    """Tokens each row really generated: up to and including its first EOS."""
    lengths = []
    for row in new_tokens.tolist():
        n = 0
        for token in row:
            if token == pad_id and token != eos_id:
                break
            n += 1
            if token == eos_id:
                break
        lengths.append(n)
    return lengths


# --- vLLM ----------------------------------------------------------------------------------------


def tensor_parallel_check(size: Any, *, backend: str) -> int:
    """`size` (--tp) as the GPUs one vLLM engine splits each layer over, or a ValueError that
    says why not: only vLLM splits a model (transformers runs it on one device), and `auto`
    might pick transformers on the worker, so more than one asks for `vllm` by name."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"tensor parallel size (--tp) must be a whole number >= 1, not {size!r}")
    if size > 1 and backend != "vllm":
        raise ValueError(
            f"--tp {size} splits the model over {size} GPUs with vLLM only: "
            f"use --backend vllm (not {backend})"
        )
    return size


def vllm_engine_args(
    model_path: str,
    *,
    dtype: str = "bfloat16",
    max_model_len: int = 4096,
    max_images: int = 16,
    tensor_parallel_size: int = 1,
) -> dict[str, Any]:
    """The keyword arguments of `vllm.LLM` for a policy (pure, so tests see what vLLM gets)."""
    return {
        "model": model_path,
        "dtype": dtype,
        "max_model_len": max_model_len,
        "limit_mm_per_prompt": {"image": max_images},
        "tensor_parallel_size": tensor_parallel_check(tensor_parallel_size, backend="vllm"),
    }


class VllmBackend:
    """vLLM's offline engine; one seed per prompt (vLLM draws the K samples from it).
    `tensor_parallel_size` > 1 splits every layer over that many GPUs of this machine, for
    a policy too big for one (vLLM starts one worker process per GPU)."""

    name = "vllm"

    def __init__(
        self,
        model_path: str,
        *,
        dtype: str = "bfloat16",
        max_model_len: int = 4096,
        max_images: int = 16,
        tensor_parallel_size: int = 1,
    ):
        import torch
        from transformers import AutoConfig

        from training.core.modeling import load_processor

        if getattr(AutoConfig.from_pretrained(model_path), "image_token_norm", None):
            # vLLM runs its own LLaVA code, which would skip the rescaling the model was
            # trained with (modeling.attach_image_token_norm): its answers would be another
            # model's. Refused rather than wrong.
            raise GenerationError(
                f"{model_path} rescales its image tokens (image_token_norm), which vLLM does "
                "not do: generate with the transformers backend"
            )
        engine_args = vllm_engine_args(
            model_path,
            dtype=dtype,
            max_model_len=max_model_len,
            max_images=max_images,
            tensor_parallel_size=tensor_parallel_size,
        )
        gpus = torch.cuda.device_count()
        if tensor_parallel_size > gpus:
            # vLLM would wait for GPUs that never come, or fail deep inside a worker.
            raise GenerationError(
                f"--tp {tensor_parallel_size} needs {tensor_parallel_size} GPUs on one "
                f"machine; this one has {gpus}"
            )
        from vllm import LLM

        self.processor = load_processor(model_path)
        self.llm = LLM(**engine_args)

    def prompt_tokens(self, request: GenerationRequest, params: SamplingParams) -> int:
        # vLLM schedules its own batches; a flat estimate is enough to chunk the stream.
        return 1

    def generate(
        self, requests: Sequence[GenerationRequest], params: SamplingParams
    ) -> list[GeneratedSamples]:
        from vllm import SamplingParams as VllmSampling

        inputs = []
        sampling = []
        for r in requests:
            item: dict[str, Any] = {"prompt": chat_text(self.processor, r, params)}
            if r.images:
                converted = [image.convert("RGB") for image in r.images]
                item["multi_modal_data"] = {
                    "image": converted[0] if len(converted) == 1 else converted
                }
            inputs.append(item)
            sampling.append(
                VllmSampling(
                    n=params.k,
                    temperature=params.temperature,
                    top_p=params.top_p,
                    max_tokens=params.max_new_tokens,
                    seed=row_seed(params.seed, r.key, 0),
                )
            )
        outputs = self.llm.generate(inputs, sampling, use_tqdm=False)
        return [
            GeneratedSamples(
                key=r.key,
                texts=[clean_text(o.text) for o in out.outputs],
                token_counts=[len(o.token_ids) for o in out.outputs],
            )
            for r, out in zip(requests, outputs, strict=True)
        ]


def vllm_available() -> bool:
    import importlib.util

    import torch

    return importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()


def backend_name_check(requested: str) -> None:
    """Refuse an unknown backend name. Whether vLLM can run is the worker's question: the
    machine that launches a job (the web server) need not have it."""
    if requested not in ("auto", "transformers", "vllm"):
        raise ValueError(f"unknown backend {requested!r}; use auto, transformers or vllm")


def choose_backend_name(requested: str, *, has_adapter: bool) -> str:
    """`auto` takes vLLM when it is installed, a GPU is present and no adapter is stacked."""
    backend_name_check(requested)
    if requested == "vllm":
        if not vllm_available():
            raise GenerationError("the vllm backend needs the vllm package and a CUDA GPU")
        if has_adapter:
            raise GenerationError("the vllm backend does not load LoRA adapters here: merge it")
        return "vllm"
    if requested == "auto" and not has_adapter and vllm_available():
        return "vllm"
    return "transformers"


def generate_text(
    policy: LoadedPolicy,
    images: list[Image.Image],
    questions: list[str],
    *,
    max_new_tokens: int = 32,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int | None = None,
) -> list[str]:
    """One answer per (image, question), in one batch, through `TransformersBackend`: the
    shortest way to ask a loaded policy something (tests, a shell)."""
    if len(images) != len(questions):
        raise ValueError(f"{len(images)} images but {len(questions)} questions")
    params = SamplingParams(
        k=1,
        temperature=temperature if do_sample else 0.0,
        top_p=top_p,
        max_new_tokens=max_new_tokens,
        seed=seed or 0,
    )
    requests = [
        GenerationRequest(key=str(i), prompt=PromptInput(question), image=image)
        for i, (image, question) in enumerate(zip(images, questions, strict=True))
    ]
    if not requests:
        return []
    return [s.texts[0] for s in TransformersBackend(policy).generate(requests, params)]
