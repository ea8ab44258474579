"""A local vision-language checkpoint as judge (seed 002 used LLaVA-1.6-34B; any family the
shared loader takes), through the generation core; its JSON is parsed robustly (prose
around it is fine)."""

from __future__ import annotations

import io
import threading

from annotation.core.judges.base import (
    JudgeItem,
    JudgeResult,
    TextResult,
    Usage,
    parse_ratings,
    require_text,
)
from annotation.core.judges.pairwise import PairVerdict, parse_verdict
from annotation.core.judges.prompt import render_judge_prompt, render_pairwise_prompt


class LocalJudge:
    provider = "local"

    def __init__(
        self,
        *,
        model: str,
        adapter_path: str | None = None,
        temperature: float = 0.0,
        prompt_version: str = "v2",
        max_new_tokens: int = 1024,
    ) -> None:
        self.model = model
        self.adapter_path = adapter_path
        self.temperature = temperature
        self.prompt_version = prompt_version
        self.max_new_tokens = max_new_tokens
        # One model, one GPU: calls from the runner's threads take turns.
        self._lock = threading.Lock()

    def rate(self, item: JudgeItem) -> JudgeResult:
        prompt = render_judge_prompt(item, self.prompt_version)
        text, usage = self._generate(prompt, [data for data, _ in item.images])
        return parse_ratings(text, len(item.completions), usage=usage)

    def compare(self, item: JudgeItem) -> PairVerdict:
        text, usage = self._generate(
            render_pairwise_prompt(item), [data for data, _ in item.images]
        )
        return parse_verdict(text, usage=usage)

    def complete(
        self, prompt: str, image: bytes | None = None, image_mime: str = "image/png"
    ) -> TextResult:
        text, usage = self._generate(prompt, [image] if image else [])
        return require_text(text, usage, f"local {self.model}")

    def _generate(self, text: str, images_bytes: list[bytes]) -> tuple[str, Usage]:
        from PIL import Image

        from training.core.generation import GenerationRequest, PromptInput, SamplingParams
        from training.core.generation.core import TransformersBackend
        from training.core.modeling import load_policy_cached

        # Every image opens the one user turn, in order; the prompt text numbers them.
        images = [Image.open(io.BytesIO(data)).convert("RGB") for data in images_bytes]
        params = SamplingParams(
            k=1, temperature=self.temperature, max_new_tokens=self.max_new_tokens, seed=0
        )
        request = GenerationRequest(
            key="judge",
            prompt=PromptInput(text),
            image=images[0] if images else None,
            more_images=tuple(images[1:]),
        )
        with self._lock:
            backend = TransformersBackend(
                load_policy_cached(self.model, adapter_path=self.adapter_path)
            )
            prompt_tokens = backend.prompt_tokens(request, params)
            (samples,) = backend.generate([request], params)
        return samples.texts[0], Usage(prompt_tokens, sum(samples.token_counts))
