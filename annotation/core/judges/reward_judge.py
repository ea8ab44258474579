"""A trained reward model as judge (issue 17.1, `reward:CHECKPOINT`): one scalar per
completion, no HelpSteer scores and no text. Higher is better; the scale is the model's
own (the likelihood head's is a scaled log-likelihood), so rewards compare completions of
one reward model, never across models.

The item is laid out as the reward recipe trained on it: the export's prompt messages
(datasets_app/core/export/parquet.py) and each completion as the assistant turn.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass, field
from typing import Any

from annotation.core.judges.base import JudgeItem, Usage

BATCH_SIZE = 16


@dataclass(frozen=True)
class RewardResult:
    rewards: tuple[float, ...]  # one per completion, in the item's order
    usage: Usage = field(default_factory=Usage)

    @property
    def raw(self) -> str:
        """What the call record keeps as the answer: the scalars, as written."""
        return ", ".join(f"{r:.6g}" for r in self.rewards)


def _message(role: str, text: str) -> dict[str, Any]:
    return {"role": role, "content": [{"type": "text", "text": text}]}


def reward_rows(item: JudgeItem) -> list[dict[str, Any]]:
    """One pair row per completion (the completion as `chosen`), as the reward model reads."""
    from PIL import Image

    from datasets_app.core.conversation import prompt_messages

    images = [Image.open(io.BytesIO(data)).convert("RGB") for data, _ in item.images]
    prompt = prompt_messages(item.turns, item.question, len(images))
    return [
        {"images": images, "prompt": prompt, "chosen": [_message("assistant", text)]}
        for text in item.completions
    ]


class RewardJudge:
    provider = "reward"

    def __init__(self, *, folder: str, device: str | None = None) -> None:
        self.folder = folder
        self.device = device
        self._loaded: tuple[Any, Any] | None = None
        self._lock = threading.Lock()  # one model: the runner's threads take turns

    def _model(self) -> tuple[Any, Any]:
        if self._loaded is None:
            from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

            from training.core.recipes.common import VisionCollator
            from training.core.recipes.reward import load_reward_model_at

            model, processor = load_reward_model_at(self.folder, device=self.device)
            self._loaded = (model, VisionCollator(DataCollatorForVisionPreference(processor)))
        return self._loaded

    def score(self, item: JudgeItem) -> RewardResult:
        rows = reward_rows(item)
        with self._lock:
            model, collator = self._model()
            rewards = model.scores(collator, rows, BATCH_SIZE)
        return RewardResult(rewards=tuple(float(r) for r in rewards))

    def rate(self, item: JudgeItem) -> Any:
        raise TypeError("a reward model gives one scalar per completion: call score(item)")
