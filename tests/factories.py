"""Small builders for rows that tests need; each makes only what it is asked for."""

from __future__ import annotations

import hashlib
import itertools

from annotation.models import Completion, JudgeConfig
from datasets_app.models import Prompt, Source
from training.models import Checkpoint

_seq = itertools.count()


def source(name: str | None = None) -> Source:
    return Source.objects.create(name=name or f"source-{next(_seq)}", kind="prompts")


def prompt(src: Source | None = None, question: str = "What is shown?") -> Prompt:
    n = next(_seq)
    return Prompt.objects.create(
        source=src or source(),
        question=question,
        content_hash=hashlib.sha256(f"{question}-{n}".encode()).hexdigest(),
    )


def checkpoint(name: str | None = None) -> Checkpoint:
    return Checkpoint.objects.create(name=name or f"ckpt-{next(_seq)}", model_path="tiny-llava")


def completion(p: Prompt | None = None, index: int = 0, text: str = "A red circle.") -> Completion:
    return Completion.objects.create(
        prompt=p or prompt(), checkpoint=checkpoint(), text=text, sample_index=index
    )


def judge(name: str | None = None) -> JudgeConfig:
    return JudgeConfig.objects.create(name=name or f"judge-{next(_seq)}", provider="oracle")
