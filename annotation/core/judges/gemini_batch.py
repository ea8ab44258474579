"""Gemini's Batch Mode for the judge (issue 18.1), through `google-genai`'s
`client.batches` with inline requests (pure core: no Django): one request per item, keyed
by the item in its metadata; the answers come back inline with the finished batch and go
through the online judge's own validation.

The SDK's BatchJob carries no request counts, so a Gemini batch's progress is its state
until it ends. Batch calls cost half the online price.
"""

from __future__ import annotations

from typing import Any

from annotation.core.judges.base import InvalidJudgeOutput, JudgeItem
from annotation.core.judges.gemini_judge import GeminiJudge
from annotation.core.judges.openai_batch import BatchResults, BatchState

# The SDK's job states, as the runner's batch states.
STATES = {
    "JOB_STATE_SUCCEEDED": "completed",
    "JOB_STATE_PARTIALLY_SUCCEEDED": "completed",
    "JOB_STATE_FAILED": "failed",
    "JOB_STATE_CANCELLED": "cancelled",
    "JOB_STATE_EXPIRED": "expired",
    "JOB_STATE_PENDING": "validating",
    "JOB_STATE_QUEUED": "validating",
    "JOB_STATE_RUNNING": "in_progress",
    "JOB_STATE_CANCELLING": "cancelling",
}


class GeminiBatch:
    def __init__(self, judge: GeminiJudge) -> None:
        self.judge = judge
        self._answers: dict[str, list[Any]] = {}  # batch name -> its inline responses

    def submit(self, items: list[JudgeItem]) -> str:
        keys = [item.key for item in items]
        if len(set(keys)) != len(keys):
            raise ValueError("batch items need distinct keys (they are the requests' metadata)")
        try:
            job = self.judge.client.batches.create(
                model=self.judge.model,
                src=[self.judge.batch_request(item) for item in items],
                config={"display_name": f"preference-studio ratings ({len(items)})"},
            )
        except Exception as exc:  # the SDK's APIError or a transport error
            raise self.judge.api_error(exc) from None
        return str(job.name)

    def state(self, name: str) -> BatchState:
        try:
            job = self.judge.client.batches.get(name=name)
        except Exception as exc:
            raise self.judge.api_error(exc) from None
        raw = job.state.value if job.state is not None else "JOB_STATE_UNSPECIFIED"
        status = STATES.get(raw, "in_progress")
        answers = list((job.dest.inlined_responses or []) if job.dest else [])
        self._answers[name] = answers
        error = job.error.message if job.error is not None else None
        return BatchState(
            id=name,
            status=status,
            total=0,
            completed=sum(1 for a in answers if a.response is not None),
            failed=sum(1 for a in answers if a.error is not None),
            errors=(error,) if error else (),
        )

    def cancel(self, name: str) -> None:
        try:
            self.judge.client.batches.cancel(name=name)
        except Exception as exc:
            raise self.judge.api_error(exc) from None

    def results(self, state: BatchState, items: dict[str, JudgeItem]) -> BatchResults:
        out = BatchResults()
        for answer in self._answers.get(state.id, []):
            key = (answer.metadata or {}).get("key")
            if key not in items or key in out.ratings:
                continue
            if answer.error is not None or answer.response is None:
                detail = answer.error.message if answer.error else "no response"
                out.errors[key] = f"batch request failed: {detail}"[:300]
                continue
            try:
                result = self.judge.result_from_response(
                    answer.response, len(items[key].completions)
                )
            except InvalidJudgeOutput as exc:
                out.errors[key] = f"invalid answer: {exc}"
                out.raw[key] = exc.raw
                continue
            out.ratings[key] = result
            out.errors.pop(key, None)
        for key in items:
            if key not in out.ratings and key not in out.errors:
                out.errors[key] = f"no answer for it in batch {state.id} ({state.status})"
        return out
