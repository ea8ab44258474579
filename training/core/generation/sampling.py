"""Sampling parameters, and a sampler whose draws depend only on (seed, prompt, sample).

Hugging Face `generate` draws every row of a batch from one global random stream, so a
row's text would depend on which other prompts share its batch: a resumed job, or a
different batch size, would produce different samples. Here each row owns a generator
seeded from (seed, prompt key, sample index); the logits processor does temperature and
top-p itself, draws the token with that generator, and hands `generate` a one-hot
distribution, so the library's own draw can only pick that token.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

MAX_K = 64


@dataclass(frozen=True)
class SamplingParams:
    k: int = 4
    temperature: float = 0.7
    top_p: float = 1.0
    max_new_tokens: int = 256
    seed: int = 0
    template: str = "plain"
    # SteerLM: the attribute string ("helpfulness:4,correctness:4,...") the assistant turn
    # starts with, as the model was trained; the model writes on from there.
    steer: str = ""

    def validate(self) -> None:
        from training.core.generation.templates import TEMPLATES

        if not 1 <= self.k <= MAX_K:
            raise ValueError(f"k must be between 1 and {MAX_K}, not {self.k}")
        if not 0 <= self.temperature <= 2:
            raise ValueError(f"temperature must be between 0 and 2, not {self.temperature}")
        if self.temperature == 0 and self.k > 1:
            raise ValueError("temperature 0 is greedy decoding: every sample would be the same")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], not {self.top_p}")
        if not 1 <= self.max_new_tokens <= 8192:
            raise ValueError(
                f"max_new_tokens must be between 1 and 8192, not {self.max_new_tokens}"
            )
        if self.steer:
            from datasets_app.core.curation.strategies import parse_steerlm_label

            parse_steerlm_label(self.steer)  # ValueError names the bad part
        if self.template not in TEMPLATES:
            names = ", ".join(sorted(TEMPLATES))
            raise ValueError(f"unknown prompt template {self.template!r}; templates are {names}")

    def sample_config(self) -> dict[str, Any]:
        """What decides a sample's text, apart from prompt, checkpoint, template and index.

        K is left out on purpose: sample j is the same whatever K is, so raising K later
        adds samples instead of redoing them.
        """
        d = asdict(self)
        del d["k"], d["template"]
        if not d["steer"]:
            del d["steer"]  # unsteered samples keep the hashes they had before steering existed
        return d

    @property
    def config_hash(self) -> str:
        blob = json.dumps(self.sample_config(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()


def row_seed(seed: int, prompt_key: str, sample_index: int) -> int:
    digest = hashlib.sha256(f"{seed}:{prompt_key}:{sample_index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & 0x7FFF_FFFF_FFFF_FFFF


def make_row_sampler(
    seeds: list[int], temperature: float, top_p: float, max_new_tokens: int, device: Any
) -> Any:
    """A transformers LogitsProcessor that samples row i from its own random stream.

    Each row's uniforms for every step are drawn once, up front, from a generator seeded
    with its seed; each step then samples all rows at once by inverse CDF. (One generator
    call per row per step would cost a kernel launch per row on a GPU.)
    """
    import torch
    from transformers import LogitsProcessor

    class RowSeededSampler(LogitsProcessor):
        def __init__(self) -> None:
            uniforms = []
            for seed in seeds:
                generator = torch.Generator()
                generator.manual_seed(seed)
                uniforms.append(torch.rand(max_new_tokens, generator=generator))
            self.uniforms = torch.stack(uniforms).to(device)
            self.step = 0

        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            probs = torch.softmax(scores.float() / temperature, dim=-1)
            if top_p < 1.0:
                sorted_probs, order = torch.sort(probs, descending=True, dim=-1)
                # Keep the smallest prefix whose mass reaches top_p (at least one token).
                drop = sorted_probs.cumsum(dim=-1) - sorted_probs >= top_p
                sorted_probs = sorted_probs.masked_fill(drop, 0.0)
                probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
            cdf = probs.cumsum(dim=-1)
            u = self.uniforms[:, min(self.step, self.uniforms.shape[1] - 1)]
            self.step += 1
            target = (u * cdf[:, -1]).unsqueeze(-1)
            # right=True skips zero-probability tokens (their CDF equals the previous one).
            chosen = torch.searchsorted(cdf, target, right=True).clamp(max=probs.shape[-1] - 1)
            one_hot = torch.full_like(scores, float("-inf"))
            return one_hot.scatter(-1, chosen, 0.0)

    return RowSeededSampler()
