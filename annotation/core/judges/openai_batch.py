"""OpenAI's Batch API for the judge (issue 18.1), through the `openai` SDK (pure core: no
Django): the online rating requests written as a JSONL input file, uploaded to Files, run
as one Batch on `/v1/chat/completions`, polled, and its output and error files read back.

Every output line goes through the online judge's own validation (`OpenAIJudge.
result_from_body`), so a line is a rating exactly when the same answer online would be.
A line that failed, did not validate, or is missing comes back as an error text, for the
caller to ask again. Batch calls cost half the online price (BATCH_PRICE_FACTOR).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Final

import openai

from annotation.core.judges.base import InvalidJudgeOutput, JudgeItem, JudgeResult
from annotation.core.judges.openai_judge import OpenAIJudge

ENDPOINT: Final = "/v1/chat/completions"
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
BATCH_PRICE_FACTOR = 0.5  # both providers sell batch calls at half the online price


@dataclass(frozen=True)
class BatchState:
    id: str
    status: str
    total: int = 0
    completed: int = 0
    failed: int = 0
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: tuple[str, ...] = ()

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL

    def counts(self) -> dict[str, int]:
        return {"total": self.total, "completed": self.completed, "failed": self.failed}


@dataclass
class BatchResults:
    """What a finished batch said: a rating per item key, or why there is none."""

    ratings: dict[str, JudgeResult] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    raw: dict[str, str] = field(default_factory=dict)  # the line's answer text, when any


class OpenAIBatch:
    """One judge's batches: submit items, poll, read results, cancel."""

    def __init__(self, judge: OpenAIJudge) -> None:
        self.judge = judge

    def input_file(self, items: list[JudgeItem]) -> bytes:
        lines = [
            {
                "custom_id": item.key,
                "method": "POST",
                "url": ENDPOINT,
                "body": self.judge.batch_body(item),
            }
            for item in items
        ]
        return "".join(json.dumps(line) + "\n" for line in lines).encode()

    def submit(self, items: list[JudgeItem]) -> str:
        """Upload the items' requests and start a batch on them; its id."""
        keys = [item.key for item in items]
        if len(set(keys)) != len(keys):
            raise ValueError("batch items need distinct keys (they are the lines' custom_id)")
        client = self.judge.client
        try:
            upload = client.files.create(
                file=("ratings.jsonl", self.input_file(items), "application/jsonl"),
                purpose="batch",
            )
            batch = client.batches.create(
                input_file_id=upload.id, endpoint=ENDPOINT, completion_window="24h"
            )
        except openai.OpenAIError as exc:
            raise self.judge._error(exc) from None
        return batch.id

    def state(self, batch_id: str) -> BatchState:
        try:
            batch = self.judge.client.batches.retrieve(batch_id)
        except openai.OpenAIError as exc:
            raise self.judge._error(exc) from None
        counts = batch.request_counts
        errors = tuple(
            f"{e.code or ''}: {e.message or ''}".strip(": ")
            for e in ((batch.errors.data or []) if batch.errors else [])
        )
        return BatchState(
            id=batch.id,
            status=batch.status,
            total=counts.total if counts else 0,
            completed=counts.completed if counts else 0,
            failed=counts.failed if counts else 0,
            output_file_id=batch.output_file_id,
            error_file_id=batch.error_file_id,
            errors=errors,
        )

    def cancel(self, batch_id: str) -> None:
        try:
            self.judge.client.batches.cancel(batch_id)
        except openai.OpenAIError as exc:
            raise self.judge._error(exc) from None

    def results(self, state: BatchState, items: dict[str, JudgeItem]) -> BatchResults:
        """Read the output and error files of a finished batch against `items` (by key);
        an item with no line gets an error saying so."""
        out = BatchResults()
        for file_id in (state.output_file_id, state.error_file_id):
            if file_id:
                for line in self._lines(file_id):
                    self._read_line(line, items, out)
        for key in items:
            if key not in out.ratings and key not in out.errors:
                out.errors[key] = f"no line for it in batch {state.id} ({state.status})"
        return out

    def _lines(self, file_id: str) -> list[str]:
        try:
            text = self.judge.client.files.content(file_id).text
        except openai.OpenAIError as exc:
            raise self.judge._error(exc) from None
        return [line for line in text.splitlines() if line.strip()]

    def _read_line(self, line: str, items: dict[str, JudgeItem], out: BatchResults) -> None:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            return  # unreadable: its item has no line, so it is asked again
        key = record.get("custom_id") if isinstance(record, dict) else None
        if key not in items or key in out.ratings:
            return
        response = record.get("response") or {}
        error = record.get("error")
        status = response.get("status_code")
        body = response.get("body")
        if error or status != 200 or not isinstance(body, dict):
            detail = error or (body.get("error") if isinstance(body, dict) else None) or body
            out.errors[key] = f"batch line failed (HTTP {status}): {json.dumps(detail)[:300]}"
            return
        try:
            result = self.judge.result_from_body(body, len(items[key].completions))
        except InvalidJudgeOutput as exc:
            out.errors[key] = f"invalid answer: {exc}"
            out.raw[key] = exc.raw
            return
        out.ratings[key] = result
        out.errors.pop(key, None)
        out.raw[key] = result.raw


def batch_state_json(state: BatchState) -> dict[str, Any]:
    return {"id": state.id, "status": state.status, "counts": state.counts()}
