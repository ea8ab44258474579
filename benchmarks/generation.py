"""Batched generation against a one-prompt-at-a-time loop, on the same prompts, in one run.

Both paths use the project's generation core and the same sampling parameters; the loop
sends one prompt (with its K samples) per `generate` call, the batched path packs prompts
under the token budget. Prints one JSON line with completions/s and generated tokens/s.

    .venv/bin/python benchmarks/generation.py [--model DIR] [--prompts 48] [--k 4]

Without --model it builds the tiny LLaVA into a temporary folder (CPU figures). On a GPU
machine pass a llava-1.5-7b-sized folder (see benchmarks/make_random_llava.py) and
--backend vllm to measure vLLM too.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from datasets_app.core.shapes import draw_scene, random_scene
from training.core.generation import (
    GenerationRequest,
    PromptInput,
    SamplingParams,
    TransformersBackend,
    VllmBackend,
    generate_batches,
)
from training.core.modeling import load_policy
from training.core.tiny_models import build_tiny_llava


def _requests(n: int) -> list[GenerationRequest]:
    import random

    rng = random.Random(0)
    return [
        GenerationRequest(
            key=str(i),
            prompt=PromptInput("How many shapes are in the image?", ("1", "2", "3", "4")),
            image=draw_scene(random_scene(rng)),
        )
        for i in range(n)
    ]


def _measure(backend, requests, params, budget) -> dict:
    start = time.perf_counter()
    completions = tokens = 0
    for batch in generate_batches(backend, requests, params, token_budget=budget):
        completions += sum(len(s.texts) for s in batch)
        tokens += sum(sum(s.token_counts) for s in batch)
    seconds = time.perf_counter() - start
    return {
        "seconds": round(seconds, 3),
        "completions_per_s": round(completions / seconds, 2),
        "tokens_per_s": round(tokens / seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", help="checkpoint folder (default: build the tiny LLaVA)")
    parser.add_argument("--prompts", type=int, default=48)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--budget", type=int, default=16_384)
    parser.add_argument("--backend", choices=["transformers", "vllm"], default="transformers")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or str(build_tiny_llava(Path(tmp) / "tiny"))
        if args.backend == "vllm":
            backend = VllmBackend(model)
            device = "cuda"
        else:
            policy = load_policy(model)
            backend = TransformersBackend(policy)
            device = policy.device
        requests = _requests(args.prompts)
        # min_new_tokens would be nicer, but random weights stop early; fix K and length.
        params = SamplingParams(
            k=args.k, temperature=0.7, max_new_tokens=args.max_new_tokens, seed=0
        )
        _measure(backend, requests[:2], params, args.budget)  # warm-up
        loop = _measure(backend, requests, params, budget=1)
        batched = _measure(backend, requests, params, budget=args.budget)
    print(
        json.dumps(
            {
                "benchmark": "generation",
                "backend": args.backend,
                "device": device,
                "model": args.model or "tiny-llava",
                "prompts": args.prompts,
                "k": args.k,
                "max_new_tokens": args.max_new_tokens,
                "loop": loop,
                "batched": batched,
                "speedup_completions": round(
                    batched["completions_per_s"] / loop["completions_per_s"], 2
                ),
            }
        )
    )


if __name__ == "__main__":
    main()
