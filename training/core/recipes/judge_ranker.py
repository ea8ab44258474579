"""A judge ranking online DPO's samples (issue 17.2): a local VLM or an API judge, called
in the runner process through the judge core's runner (its concurrency, rate limits,
retries and prices), one call per prompt rating its K answers at once. Pure: no Django.

The runner has no database, so the cache is a JSON-lines file in the run's folder, keyed
as the site's JudgeCall cache is (`item_cache_key`): sampling is seeded per prompt, step
and answer, so a resumed run asks for the very answers it asked before and pays nothing
twice. Calls and their cost are counted for the run's metrics (`online/judge_calls`,
`online/judge_cost_usd`), which the lab adds to the method's costs.

A sample's score is helpfulness + correctness + coherence (seed 001's sum); an item the
judge never rated validly scores every answer the same, so its prompt sits the step out.
"""

from __future__ import annotations

import io
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from annotation.core.judges.base import Judge, JudgeItem, JudgeResult
from annotation.core.judges.cache import item_cache_key
from annotation.core.judges.pricing import cost_usd
from annotation.core.judges.runner import ItemOutcome, RunLimits, run_items

JUDGE_PROVIDERS = ("local", "openai", "gemini")
CACHE_FILE = "judge_cache.jsonl"
SUM = ("helpfulness", "correctness", "coherence")
PROMPT_VERSION = "v2"


def parse_judge_spec(spec: str) -> tuple[str, str]:
    """("openai", "gpt-4o-mini") from "openai:gpt-4o-mini"; ValueError when unusable."""
    provider, _, model = spec.partition(":")
    if provider not in JUDGE_PROVIDERS or not model.strip():
        raise ValueError(
            f"a ranking judge is local:PATH, openai:MODEL or gemini:MODEL, not {spec!r}"
        )
    return provider, model.strip()


def build_judge(spec: str, temperature: float = 0.0) -> Judge:
    """The judge for `spec`, keys and endpoints from the environment (as the site reads
    them: OPENAI_API_KEY / OPENAI_BASE_URL, GEMINI_API_KEY / GEMINI_BASE_URL)."""
    provider, model = parse_judge_spec(spec)
    if provider == "local":
        from annotation.core.judges.local_judge import LocalJudge

        return LocalJudge(model=model, temperature=temperature)
    if provider == "openai":
        from annotation.core.judges.openai_judge import OpenAIJudge

        return OpenAIJudge(
            model=model,
            api_key=os.environ.get("OPENAI_API_KEY", ""),
            base_url=os.environ.get("OPENAI_BASE_URL") or None,
            temperature=temperature,
        )
    from annotation.core.judges.gemini_judge import GeminiJudge

    return GeminiJudge(
        model=model,
        api_key=os.environ.get("GEMINI_API_KEY", ""),
        base_url=os.environ.get("GEMINI_BASE_URL") or None,
        temperature=temperature,
    )


def _png(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "PNG")
    return buffer.getvalue()


def _question(prompt: list[dict[str, Any]]) -> str:
    last = [m for m in prompt if m.get("role") == "user"][-1]
    content = last["content"]
    if isinstance(content, str):
        return content
    return "".join(part.get("text") or "" for part in content if part.get("type") == "text")


class JudgeRanker:
    """Callable as online DPO's ranker: (rows, answers) -> scores, rows repeated K times."""

    def __init__(
        self,
        judge: Judge,
        *,
        cache_dir: str | Path,
        k: int,
        limits: RunLimits | None = None,
    ) -> None:
        self.judge, self.k = judge, k
        self.limits = limits or RunLimits(concurrency=4)
        self.cache_path = Path(cache_dir) / CACHE_FILE
        self.cache: dict[str, dict[str, Any]] = {}
        if self.cache_path.is_file():
            for line in self.cache_path.read_text().splitlines():
                if line.strip():
                    entry = json.loads(line)
                    self.cache[entry["key"]] = entry
        self.calls = 0
        self.cost_usd = 0.0
        self._lock = threading.Lock()

    def _item(self, row: dict[str, Any], answers: list[str], n: int) -> JudgeItem:
        images = [_png(image) for image in row["images"]]
        return JudgeItem(
            key=f"{row.get('prompt_id')}:{n}",
            question=_question(row["prompt"]),
            completions=tuple(answers),
            image=images[0] if images else None,
            more_images=tuple((data, "image/png") for data in images[1:]),
            reference_answer=row.get("reference") or "",
        )

    def _key(self, item: JudgeItem) -> str:
        judge = self.judge
        return item_cache_key(
            provider=judge.provider,
            model=judge.model,
            prompt_version=PROMPT_VERSION,
            temperature=float(getattr(judge, "temperature", 0.0)),
            item=item,
        )

    def __call__(self, rows: list[dict[str, Any]], answers: list[str]) -> list[float]:
        k = self.k
        groups = [(rows[i * k], answers[i * k : (i + 1) * k]) for i in range(len(rows) // k)]
        items = [self._item(row, group, n) for n, (row, group) in enumerate(groups)]
        keys = {item.key: self._key(item) for item in items}
        todo = [item for item in items if keys[item.key] not in self.cache]
        if todo:
            run_items(
                self.judge,
                iter(todo),
                self.limits,
                on_outcome=self._record(keys),
                price=lambda usage: cost_usd(self.judge.model, usage),
            )
        scores: list[float] = []
        for item in items:
            entry = self.cache.get(keys[item.key])
            sums = entry["sums"] if entry else [0.0] * len(item.completions)
            scores.extend(float(x) for x in sums)
        return scores

    def _record(self, keys: dict[str, str]) -> Callable[[ItemOutcome], None]:
        def record(outcome: ItemOutcome) -> None:
            with self._lock:
                self.calls += outcome.attempts
                self.cost_usd += outcome.cost_usd
                result = outcome.result
                if not isinstance(result, JudgeResult):
                    return  # never rated: its answers tie, the prompt sits the step out
                entry: dict[str, Any] = {
                    "key": keys[outcome.item.key],
                    "sums": [sum(getattr(r, a) for a in SUM) for r in result.ratings],
                }
                self.cache[entry["key"]] = entry
                with self.cache_path.open("a") as handle:
                    handle.write(json.dumps(entry) + "\n")

        return record
