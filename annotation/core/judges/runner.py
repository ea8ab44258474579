"""Run a judge over many items: concurrent, rate limited, retried, costed.

Calls happen on worker threads; every outcome is handed to `on_outcome` on the calling
thread, so that the caller can write to its database from one thread. Requests are spaced
evenly at the requests-per-minute limit (no bursts, so a server that enforces the limit
per second never sees it exceeded) and tokens are drawn from a tokens-per-minute bucket.
Transient errors (429, 5xx, timeouts) are retried with exponential backoff and jitter,
honouring Retry-After; invalid answers are asked again a few times; a fatal error (bad key,
unknown model) stops the run, since every other item would fail the same way.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from annotation.core.judges.base import (
    FatalJudgeError,
    InvalidJudgeOutput,
    Judge,
    JudgeItem,
    JudgeResult,
    TextResult,
    TransientJudgeError,
    Usage,
)


@dataclass(frozen=True)
class RunLimits:
    concurrency: int = 8
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    max_attempts: int = 6  # transient failures, per item
    max_invalid_answers: int = 3  # invalid answers, per item
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    max_cost_usd: float | None = None

    def validate(self) -> None:
        if not 1 <= self.concurrency <= 256:
            raise ValueError("concurrency must be between 1 and 256")
        for name in ("requests_per_minute", "tokens_per_minute", "max_cost_usd"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive")
        if self.max_attempts < 1 or self.max_invalid_answers < 1:
            raise ValueError("attempt limits must be at least 1")


@dataclass
class ItemOutcome:
    item: JudgeItem
    result: JudgeResult | TextResult | None
    error: str = ""
    raw: str = ""
    attempts: int = 0
    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0

    @property
    def ok(self) -> bool:
        return self.result is not None


@dataclass
class RunSummary:
    submitted: int = 0
    succeeded: int = 0
    failed: int = 0
    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0
    stopped_at_max_cost: bool = False
    stopped: bool = False


class RateLimiter:
    """Even spacing for requests, and a continuously refilled bucket for tokens."""

    def __init__(
        self,
        requests_per_minute: float | None,
        tokens_per_minute: float | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.interval = 60.0 / requests_per_minute if requests_per_minute else 0.0
        self.tpm = tokens_per_minute
        self.clock, self.sleep = clock, sleep
        self._lock = threading.Lock()
        self._next_request = 0.0
        self._tokens = float(tokens_per_minute or 0)
        self._refilled_at = clock()

    def acquire(self, tokens: int = 0) -> None:
        with self._lock:
            now = self.clock()
            start = max(now, self._next_request)
            self._next_request = start + self.interval
            if self.tpm:
                start = max(start, self._reserve_tokens(min(tokens, int(self.tpm)), start))
        if start > now:
            self.sleep(start - now)

    def _reserve_tokens(self, tokens: int, at: float) -> float:
        """Take `tokens` from the bucket (going negative) and say when they were there."""
        assert self.tpm
        rate = self.tpm / 60.0
        self._tokens = min(self.tpm, self._tokens + (at - self._refilled_at) * rate)
        self._refilled_at = at
        self._tokens -= tokens
        return at if self._tokens >= 0 else at + (-self._tokens) / rate

    def settle(self, estimated: int, actual: int) -> None:
        """Correct the bucket once a call's real token count is known."""
        if self.tpm:
            with self._lock:
                self._tokens -= actual - estimated


def estimate_tokens(item: JudgeItem) -> int:
    text = len(item.question) + sum(len(c) for c in item.completions)
    text += sum(len(part.get("text") or "") for turn in item.turns for part in turn["content"])
    # ~4 characters a token, an image of a few hundred tokens, ~150 output tokens a rating.
    return text // 4 + 800 * len(item.images) + 150 * len(item.completions) + 300


def backoff_delay(attempt: int, limits: RunLimits, retry_after: float | None) -> float:
    if retry_after is not None:
        # Never earlier than the server asked; a little later, so clients do not stampede.
        return retry_after + random.uniform(0, min(1.0, 0.1 * retry_after + 0.05))  # noqa: S311
    cap = min(limits.backoff_max_s, limits.backoff_base_s * 2 ** (attempt - 1))
    return cap / 2 + random.uniform(0, cap / 2)  # noqa: S311


def rate_one(
    call: Callable[[JudgeItem], JudgeResult | TextResult],
    item: JudgeItem,
    limits: RunLimits,
    limiter: RateLimiter,
    price: Callable[[Usage], float],
    sleep: Callable[[float], None] = time.sleep,
) -> ItemOutcome:
    usage = Usage()
    transient = invalid = 0
    raw, error = "", ""
    while True:
        estimated = estimate_tokens(item)
        limiter.acquire(estimated)
        try:
            result = call(item)
        except TransientJudgeError as exc:
            limiter.settle(estimated, 0)
            transient += 1
            error = f"{type(exc).__name__}: {exc}"
            if transient >= limits.max_attempts:
                break
            sleep(backoff_delay(transient, limits, exc.retry_after))
            continue
        except InvalidJudgeOutput as exc:
            usage = usage + exc.usage
            limiter.settle(estimated, exc.usage.input_tokens + exc.usage.output_tokens)
            invalid += 1
            raw, error = exc.raw, f"invalid answer: {exc}"
            if invalid >= limits.max_invalid_answers:
                break
            continue
        usage = usage + result.usage
        limiter.settle(estimated, result.usage.input_tokens + result.usage.output_tokens)
        return ItemOutcome(
            item,
            result,
            raw=result.raw,
            attempts=transient + invalid + 1,
            usage=usage,
            cost_usd=price(usage),
        )
    return ItemOutcome(
        item,
        None,
        error=error,
        raw=raw,
        attempts=transient + invalid,
        usage=usage,
        cost_usd=price(usage),
    )


def run_items(
    judge: Judge,
    items: Iterable[JudgeItem],
    limits: RunLimits,
    *,
    on_outcome: Callable[[ItemOutcome], None],
    price: Callable[[Usage], float] = lambda usage: 0.0,
    should_stop: Callable[[], bool] = lambda: False,
    sleep: Callable[[float], None] = time.sleep,
    call: Callable[[JudgeItem], JudgeResult | TextResult] | None = None,
) -> RunSummary:
    """Rate every item (until stopped or over budget); return what it cost. `call` replaces
    `judge.rate` (the judge answering instead of rating)."""
    call = call or judge.rate
    limits.validate()
    limiter = RateLimiter(limits.requests_per_minute, limits.tokens_per_minute, sleep=sleep)
    summary = RunSummary()
    pending = iter(items)
    in_flight: set[Future[ItemOutcome]] = set()
    fatal: FatalJudgeError | None = None

    def budget_left() -> bool:
        if limits.max_cost_usd is not None and summary.cost_usd >= limits.max_cost_usd:
            summary.stopped_at_max_cost = True
            return False
        return True

    with ThreadPoolExecutor(max_workers=limits.concurrency, thread_name_prefix="judge") as pool:
        exhausted = False
        while True:
            while not exhausted and fatal is None and len(in_flight) < limits.concurrency:
                if should_stop():
                    summary.stopped = True
                    exhausted = True
                    break
                if not budget_left():
                    exhausted = True
                    break
                item = next(pending, None)
                if item is None:
                    exhausted = True
                    break
                summary.submitted += 1
                in_flight.add(pool.submit(rate_one, call, item, limits, limiter, price, sleep))
            if not in_flight:
                break
            done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in done:
                exc = future.exception()
                if isinstance(exc, FatalJudgeError):
                    fatal = fatal or exc
                    continue
                if exc is not None:
                    raise exc
                outcome = future.result()
                summary.usage = summary.usage + outcome.usage
                summary.cost_usd += outcome.cost_usd
                if outcome.ok:
                    summary.succeeded += 1
                else:
                    summary.failed += 1
                on_outcome(outcome)
    if fatal is not None:
        raise fatal
    return summary
