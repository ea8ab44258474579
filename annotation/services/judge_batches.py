"""A judging job in batch mode (issue 18.1): the items not rated and not cached go to the
provider as one batch; the job keeps the batch's id in its metrics before it waits, so a
worker that dies and a job that is resumed go back to polling and never submit again.

When the batch ends (completed, expired, failed or cancelled by the provider), every line
that rates its item is stored through the same JudgeCall cache and ratings as an online
answer, at the batch price; lines that failed, did not validate or never came are asked
again online, under the job's rate limits. A cancel from the page cancels the batch at the
provider too.
"""

from __future__ import annotations

import time
from typing import Any

from annotation.core.judges.openai_batch import BATCH_PRICE_FACTOR, OpenAIBatch, batch_state_json
from annotation.core.judges.pricing import cost_usd
from annotation.core.judges.runner import ItemOutcome, RunLimits, run_items
from workers.jobs import JobCancelled, job_progress

BATCH_PROVIDERS = ("openai", "gemini")
DEFAULT_POLL_S = 30.0


def batch_client(judge: Any) -> Any:
    """The provider's batch API for `judge` (OpenAIBatch or GeminiBatch: one interface)."""
    if judge.provider == "gemini":
        from annotation.core.judges.gemini_batch import GeminiBatch

        return GeminiBatch(judge)
    return OpenAIBatch(judge)


def run_batch(
    run: Any, state: Any, judge: Any, groups: list[Any], spec: dict[str, Any], limits: RunLimits
) -> None:
    """The batch half of `judge_run`: `state` is its _JudgeJob (cache, ratings, metrics)."""
    config = state.config
    batch = batch_client(judge)
    todo = list(state.items_to_call(iter(groups)))  # cache hits are written on the way
    if state.cancelled:
        return
    record = dict(run.job.metrics.get("batch") or {})
    if not record.get("id"):
        if not todo:
            return
        record = {"id": batch.submit(todo), "items": [i.key for i in todo], "status": "submitted"}
        state.job.metrics = {**state.job.metrics, "batch": record}
        state.save_metrics()  # the id is kept before any wait: a resume polls, never resubmits
        run.log(f"batch {record['id']} submitted: {len(todo)} requests")
    else:
        run.log(f"batch {record['id']}: polling again")
    in_batch = set(record["items"])
    items = {i.key: i for i in todo if i.key in in_batch}
    final = _wait(run, state, batch, record, spec)
    if final is None:  # cancelled here: the provider was told too
        return
    results = batch.results(final, items)
    price = BATCH_PRICE_FACTOR
    for key, result in results.ratings.items():
        cost = cost_usd(config.model, result.usage) * price
        state.record(
            ItemOutcome(
                items[key], result, raw=result.raw, attempts=1, usage=result.usage, cost_usd=cost
            )
        )
    again = [i for i in todo if i.key not in results.ratings]
    record.update(
        status=final.status,
        counts=final.counts(),
        rated_in_batch=len(results.ratings),
        asked_again_online=len(again),
    )
    state.job.metrics = {**state.job.metrics, "batch": record}
    state.save_metrics()
    if again:
        run.log(
            f"batch {final.id} {final.status}: {len(results.ratings)} rated, "
            f"{len(again)} asked again online"
        )
        run_items(
            judge,
            iter(again),
            limits,
            on_outcome=state.record,
            price=lambda usage: cost_usd(config.model, usage),
            should_stop=lambda: state.cancelled,
        )


def _wait(run: Any, state: Any, batch: Any, record: dict[str, Any], spec: dict[str, Any]):
    """Poll until the batch ends; None when the job was cancelled meanwhile."""
    poll_s = float(spec.get("poll_s", DEFAULT_POLL_S))
    while True:
        current = batch.state(record["id"])
        state.job.metrics = {
            **state.job.metrics,
            "batch": {**record, **batch_state_json(current)},
        }
        state.save_metrics()
        try:
            # The provider's counts are the progress; the heartbeat says the worker lives.
            job_progress(run.job, done=current.completed + current.failed)
        except JobCancelled:
            batch.cancel(record["id"])
            run.log(f"batch {record['id']} cancelled at the provider")
            state.cancelled = True
            return None
        if current.finished:
            return current
        time.sleep(poll_s)
