"""A LLaVA-family checkpoint as judge (seed 002 used LLaVA-1.6-34B), through the shared
loader and the generation core; its JSON is parsed robustly (prose around it is fine)."""

from __future__ import annotations

import io
import threading

from annotation.judges.base import JudgeItem, JudgeResult, Usage, parse_ratings
from annotation.judges.prompt import render_judge_prompt


class LocalJudge:
    provider = "local"

    def __init__(
        self,
        *,
        model: str,
        adapter_path: str | None = None,
        temperature: float = 0.0,
        prompt_version: str = "v1",
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
        from PIL import Image

        from training.generation import GenerationRequest, PromptInput, SamplingParams
        from training.generation.core import TransformersBackend
        from training.modeling import load_policy_cached

        text = render_judge_prompt(item, self.prompt_version)
        image = Image.open(io.BytesIO(item.image)).convert("RGB") if item.image else None
        params = SamplingParams(
            k=1, temperature=self.temperature, max_new_tokens=self.max_new_tokens, seed=0
        )
        request = GenerationRequest(key=item.key, prompt=PromptInput(text), image=image)
        with self._lock:
            backend = TransformersBackend(
                load_policy_cached(self.model, adapter_path=self.adapter_path)
            )
            prompt_tokens = backend.prompt_tokens(request, params)
            (samples,) = backend.generate([request], params)
        usage = Usage(prompt_tokens, sum(samples.token_counts))
        return parse_ratings(samples.texts[0], len(item.completions), usage=usage)
