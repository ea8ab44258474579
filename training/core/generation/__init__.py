"""Pure generation core: templates, seeded sampling, batching, backends. No Django."""

from training.core.generation.core import (
    GeneratedSamples,
    GenerationBackend,
    GenerationError,
    GenerationRequest,
    TransformersBackend,
    VllmBackend,
    backend_name_check,
    choose_backend_name,
    generate_batches,
    generate_text,
    pack_batches,
    tensor_parallel_check,
    vllm_engine_args,
)
from training.core.generation.sampling import SamplingParams
from training.core.generation.templates import TEMPLATES, PromptInput, render_prompt

__all__ = [
    "TEMPLATES",
    "GeneratedSamples",
    "GenerationBackend",
    "GenerationError",
    "GenerationRequest",
    "PromptInput",
    "SamplingParams",
    "TransformersBackend",
    "VllmBackend",
    "backend_name_check",
    "choose_backend_name",
    "generate_batches",
    "generate_text",
    "pack_batches",
    "render_prompt",
    "tensor_parallel_check",
    "vllm_engine_args",
]
