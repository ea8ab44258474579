"""Pytest fixtures for the fake judge servers (tests/fake_judge_servers.py).

Each test gets a fresh server, stopped after it; change its knobs (`retry_after`, `hang_s`,
`latency_s`, `rate_limit_per_s`, `api_key`) on the running server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fake_judge_servers import FakeGeminiServer, FakeOpenAIServer


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture
def fake_gemini() -> Iterator[FakeGeminiServer]:
    with FakeGeminiServer() as server:
        yield server


@pytest.fixture
def numbered_completions(shapes_source):
    """Four completions per prompt of `shapes_source`, "Answer i to prompt P.": texts the
    fake servers score apart (their scores hash the text)."""
    from annotation.models import Completion
    from training.models import Checkpoint

    checkpoint = Checkpoint.objects.create(name="policy", model_path="x")
    Completion.objects.bulk_create(
        Completion(
            prompt=p, checkpoint=checkpoint, text=f"Answer {i} to prompt {p.pk}.", sample_index=i
        )
        for p in shapes_source.prompts.all()
        for i in range(4)
    )
    return checkpoint
