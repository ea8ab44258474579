"""Writes for judges and ratings: the only code that joins the judge core to the ORM."""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q

from annotation.core.judges import pairwise
from annotation.core.judges.base import (
    ATTRIBUTES,
    FatalJudgeError,
    Judge,
    JudgeItem,
    JudgeResult,
    TextResult,
    TransientJudgeError,
)
from annotation.core.judges.cache import item_cache_key
from annotation.core.judges.panel import combine as panel_combine
from annotation.core.judges.panel import panel_model, parse_panel_model
from annotation.core.judges.pricing import cost_usd, price_for
from annotation.core.judges.prompt import DEFAULT_VERSION, SINGLE_TURN_VERSIONS, prompt_versions
from annotation.core.judges.runner import ItemOutcome, RunLimits, run_items
from annotation.models import Completion, JudgeCall, JudgeConfig, Rating, RewardScore
from annotation.services.judge_batches import BATCH_PROVIDERS, run_batch
from datasets_app.models import Prompt
from datasets_app.selectors import prompt_selection_ids
from training.core.modeling import ModelLoadError, check_policy
from training.services.checkpoints import checkpoint_location, reward_model_folder
from workers.chunks import ChunkRun, chunk_kind, job_fan_out, job_run_here
from workers.jobs import JobCancelled, JobFailed, job_create, job_enqueue, job_progress, job_running
from workers.models import Job, JobChunk

PROVIDERS = ("oracle", "gemini", "openai", "local", "reward", "panel")
Group = tuple[Prompt, list[Completion]]
MAX_FAILURES_SHOWN = 50
MAX_PAIRWISE_K = 1000  # a prompt's completions compared in one round robin


# Model names as the providers spell them: "gpt-4o-mini", "ft:gpt-4o-mini:org::id",
# "models/gemini-2.5-flash", a vLLM served name such as "llava-hf/llava-1.5-7b-hf".
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,199}$")
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def judge_config_check(
    *,
    provider: str,
    model: str,
    base_url: str = "",
    load_checkpoint: bool = True,
    callable_here: bool = True,
) -> None:
    """Refuse, with a message for the user, a judge that cannot be called from here: an
    unknown provider, a missing or odd model name, no API key, a base URL that is not
    http(s), a local checkpoint whose config does not load. Runs before a configuration is
    saved and before a job is queued, so that a refused judge leaves nothing behind.

    `load_checkpoint=False` stops a local judge's check at its folder and config.json,
    without reading its config and processor: cheap enough for every form that lists judges
    (the launch checks again, in full).

    `callable_here=False` checks the names only, for a judge that ran elsewhere and whose
    answers are pushed in (the REST API): no key, and no local folder, needed here."""
    if provider not in PROVIDERS:
        raise ValueError(f"unknown judge provider {provider!r}; use {', '.join(PROVIDERS)}")
    if provider != "oracle" and not model:
        raise ValueError(f"the {provider} judge needs a model: {provider}:MODEL")
    if base_url and provider not in ("gemini", "openai"):
        raise ValueError("a base URL is only for gemini and openai judges")
    if base_url and not re.match(r"^https?://[^\s/]+", base_url):
        raise ValueError(f"the base URL {base_url!r} is not an http(s) URL")
    if provider == "local" and callable_here:
        _local_judge_check(model, load=load_checkpoint)
    elif provider == "reward":
        try:
            reward_model_folder(model)
        except ValueError as exc:
            raise ValueError(f"reward judge: {exc}") from None
    elif provider == "panel":
        panel_members(model)
    elif provider in ("gemini", "openai"):
        if not _MODEL_NAME.match(model):
            raise ValueError(
                f"{model!r} is not a model name: letters, digits and . _ : / @ + - only"
            )
        if callable_here:
            _api_key(provider)


def _api_key(provider: str) -> str:
    """The key a remote judge calls with, from the environment (never from a row)."""
    if provider == "gemini":
        if not settings.GEMINI_API_KEY:
            raise ValueError("GEMINI_API_KEY (or GOOGLE_API_KEY) is not set in the environment")
        return settings.GEMINI_API_KEY
    if not settings.OPENAI_API_KEY:
        raise ValueError(
            "OPENAI_API_KEY is not set in the environment "
            "(an OpenAI-compatible server at a base URL takes any text, but needs one)"
        )
    return settings.OPENAI_API_KEY


def _local_judge_check(model: str, *, load: bool) -> None:
    """A folder (absolute, or under CHECKPOINT_ROOT) or a hub id that the model loader's own
    check passes (config, processor, adapter), since the local judge loads through it."""
    location = checkpoint_location(model)
    if not Path(location).exists() and not _HUB_ID.match(model):
        raise ValueError(f"local judge: no checkpoint folder {model}")
    if Path(location).is_dir() and not any(
        (Path(location) / name).is_file() for name in ("config.json", "adapter_config.json")
    ):
        raise ValueError(f"local judge: {model} has no config.json")
    if not load:
        return
    try:
        check_policy(location)
    except ModelLoadError as exc:
        raise ValueError(f"local judge: {model} does not load: {exc}") from None


def judge_config_get_or_create(
    *,
    provider: str,
    model: str = "",
    prompt_version: str = "v2",
    temperature: float = 0.0,
    base_url: str = "",
    callable_here: bool = True,
) -> JudgeConfig:
    """The configuration for these settings. A new one is saved only once the judge is
    known to be callable (`judge_config_check`; with `callable_here=False`, once its names
    are valid: a judge run elsewhere whose answers are pushed in); an existing one is
    returned as it is (a lookup, e.g. of whose ratings or answers to curate, needs no key),
    and `judge_launch` checks it again before any job."""
    if provider == "oracle":
        model = model or "rules-v1"
    if provider == "panel":
        model = panel_model(*parse_panel_model(model))  # one configuration per panel
    if prompt_version not in prompt_versions():
        raise ValueError(f"unknown prompt version {prompt_version!r}; have {prompt_versions()}")
    if not 0 <= temperature <= 2:
        raise ValueError("judge temperature must be between 0 and 2")
    fields = {
        "provider": provider,
        "model": model,
        "prompt_version": prompt_version,
        "temperature": temperature,
        "base_url": base_url,
    }
    existing = JudgeConfig.objects.filter(**fields).first()
    if existing is not None:
        return existing
    judge_config_check(
        provider=provider, model=model, base_url=base_url, callable_here=callable_here
    )
    name = f"{provider}:{model} {prompt_version} T={temperature:g}"
    if base_url:
        name += f" @{base_url}"
    config, _ = JudgeConfig.objects.get_or_create(**fields, defaults={"name": name[:200]})
    return config


def judge_config_from_spec(spec: str, **options: Any) -> JudgeConfig:
    """`oracle`, `gemini:MODEL`, `openai:MODEL`, `local:PATH`, `reward:CHECKPOINT` or
    `panel:MODE:ID,ID,...` (the mean or median of the judges with those ids)."""
    provider, _, model = spec.partition(":")
    return judge_config_get_or_create(provider=provider.strip(), model=model.strip(), **options)


def panel_members(model: str) -> list[JudgeConfig]:
    """The judges of a panel ("median:3,5,8"); ValueError names a missing or unfit one."""
    try:
        _, ids = parse_panel_model(model)
    except ValueError as exc:
        raise ValueError(f"panel: {exc}") from None
    found = JudgeConfig.objects.in_bulk(list(ids))
    missing = [str(i) for i in ids if i not in found]
    if missing:
        raise ValueError(f"panel: no judge with id {', '.join(missing)}")
    unfit = [found[i].name for i in ids if found[i].provider in ("reward", "panel")]
    if unfit:
        raise ValueError(f"panel: members rate on the five attributes, not {', '.join(unfit)}")
    return [found[i] for i in ids]


def build_judge(config: JudgeConfig, *, timeout_s: float = 120.0) -> Judge:
    """The judge for a configuration; a missing API key is a clear error, before any work."""
    if config.provider == "panel":  # called live (an evaluation's judge): its members each
        from annotation.core.judges.panel import PanelJudge

        mode, _ = parse_panel_model(config.model)
        members = [build_judge(m, timeout_s=timeout_s) for m in panel_members(config.model)]
        return PanelJudge(members, mode, model=config.model)  # type: ignore[return-value]
    if config.provider == "oracle":
        from annotation.core.judges.oracle import OracleJudge

        return OracleJudge(model=config.model)
    if config.provider == "reward":
        from annotation.core.judges.reward_judge import RewardJudge

        try:
            return RewardJudge(folder=reward_model_folder(config.model))  # type: ignore[return-value]
        except ValueError as exc:
            raise ValueError(f"reward judge: {exc}") from None
    if config.provider == "local":
        from annotation.core.judges.local_judge import LocalJudge

        return LocalJudge(
            model=checkpoint_location(config.model),
            temperature=config.temperature,
            prompt_version=config.prompt_version,
        )
    if config.provider == "gemini":
        from annotation.core.judges.gemini_judge import GeminiJudge

        return GeminiJudge(
            model=config.model,
            api_key=_api_key("gemini"),
            base_url=config.base_url or settings.GEMINI_BASE_URL or None,
            temperature=config.temperature,
            prompt_version=config.prompt_version,
            timeout_s=timeout_s,
        )
    if config.provider == "openai":
        from annotation.core.judges.openai_judge import OpenAIJudge

        return OpenAIJudge(
            model=config.model,
            api_key=_api_key("openai"),
            base_url=config.base_url or settings.OPENAI_BASE_URL or None,
            temperature=config.temperature,
            prompt_version=config.prompt_version,
            timeout_s=timeout_s,
        )
    raise ValueError(f"unknown judge provider {config.provider!r}")


def _check_conversations(config: JudgeConfig, mode: str, prompt_ids: list[int]) -> None:
    """Refuse, before a job, a wording that cannot show the selected conversations: judge
    prompt v1 (one image, one turn), and the judge's own answers (single-turn wording)."""
    if config.provider in ("oracle", "reward"):
        return  # reads the scene; or lays the conversation out as it trained
    single = mode == JudgeCall.Mode.ANSWER or config.prompt_version in SINGLE_TURN_VERSIONS
    if not single:
        return
    conversations = Prompt.objects.filter(pk__in=prompt_ids).filter(
        Q(more_images__isnull=False) | ~Q(turns=[])
    )
    count = conversations.distinct().count()
    if count:
        what = (
            "the judge's own answers use a single-turn wording"
            if mode == JudgeCall.Mode.ANSWER
            else f"judge prompt {config.prompt_version} shows one image and no earlier turns"
        )
        raise ValueError(
            f"{count} selected prompts are conversations or have several images, and {what}: "
            f"rate them with a judge on prompt {DEFAULT_VERSION}, or leave them out"
        )


def judge_launch(
    *,
    judge_config: JudgeConfig,
    selection: dict[str, Any],
    checkpoint_id: int | None = None,
    k_per_call: int = 4,
    limits: RunLimits | None = None,
    timeout_s: float = 120.0,
    mode: str = JudgeCall.Mode.RATE,
    batch: bool = False,
    poll_s: float = 30.0,
    both_orders: bool = False,
    chunk_size: int | None = None,
    user: Any = None,
    enqueue: bool = True,
) -> Job:
    """Freeze the prompts into a judging job on the judge queue: rating their completions
    (mode "rate"), comparing them two at a time (mode "pairwise"; `both_orders` asks each
    pair in both orders), or the judge answering each question itself (mode "answer").

    Without per-minute limits, batch or panel, the job runs as chunks of `chunk_size`
    prompts (JOB_CHUNK_SIZE unless given) that every worker on the judge queue may take."""
    limits = limits or RunLimits()
    chunk_size = chunk_size or settings.JOB_CHUNK_SIZE
    if chunk_size < 1:
        raise ValueError(f"chunk size must be at least 1, not {chunk_size}")
    limits.validate()
    if not 1 <= k_per_call <= 32:
        raise ValueError("K per call must be between 1 and 32")
    if mode not in (JudgeCall.Mode.RATE, JudgeCall.Mode.ANSWER, JudgeCall.Mode.PAIRWISE):
        raise ValueError(f"unknown judging mode {mode!r}; use rate, answer or pairwise")
    if mode == JudgeCall.Mode.PAIRWISE and judge_config.provider in ("reward", "panel"):
        raise ValueError(f"a {judge_config.provider} judge cannot compare two answers")
    # Refuse a judge that cannot be called (a key unset since, a folder gone) before a job.
    judge_config_check(
        provider=judge_config.provider, model=judge_config.model, base_url=judge_config.base_url
    )
    if batch and (judge_config.provider not in BATCH_PROVIDERS or mode != JudgeCall.Mode.RATE):
        raise ValueError(
            f"batch mode rates with {', '.join(BATCH_PROVIDERS)} judges only, "
            f"not {judge_config.provider} ({mode})"
        )
    if not poll_s > 0:
        raise ValueError("the batch poll interval must be positive")
    if judge_config.provider == "panel":
        if mode != JudgeCall.Mode.RATE:
            raise ValueError("a panel combines its members' ratings: it cannot answer questions")
        for member in panel_members(judge_config.model):
            judge_config_check(
                provider=member.provider, model=member.model, base_url=member.base_url
            )
            build_judge(member, timeout_s=timeout_s)
    else:
        build_judge(judge_config, timeout_s=timeout_s)
    prompt_ids = prompt_selection_ids(**selection)
    if mode in (JudgeCall.Mode.RATE, JudgeCall.Mode.PAIRWISE):
        with_completions = Completion.objects.all()
        if checkpoint_id:
            with_completions = with_completions.filter(checkpoint_id=checkpoint_id)
        ids = set(with_completions.values_list("prompt_id", flat=True).distinct())
        prompt_ids = [pk for pk in prompt_ids if pk in ids]
        if not prompt_ids:
            raise ValueError("no selected prompt has completions to judge")
    elif not prompt_ids:
        raise ValueError("no prompts match this selection")
    if judge_config.provider == "reward" and mode != JudgeCall.Mode.RATE:
        raise ValueError("a reward model scores completions: it cannot answer questions")
    _check_conversations(judge_config, mode, prompt_ids)
    verb = "answers" if mode == JudgeCall.Mode.ANSWER else "on"
    job = job_create(
        kind=Job.Kind.JUDGING,
        title=f"{judge_config.name} {verb} {len(prompt_ids)} prompts",
        params={
            "judge_config_id": judge_config.pk,
            "prompt_ids": prompt_ids,
            "checkpoint_id": checkpoint_id,
            "k_per_call": k_per_call,
            "limits": asdict(limits),
            "timeout_s": timeout_s,
            "mode": str(mode),
            "chunk_size": chunk_size,
            **({"batch": True, "poll_s": poll_s} if batch else {}),
            **({"both_orders": True} if both_orders else {}),
        },
        created_by=user,
    )
    if enqueue:
        job_enqueue(job)
    return job


def _images(prompt: Prompt) -> list[tuple[bytes, str]]:
    """Every image of the prompt (bytes, mime), in conversation order."""
    if not prompt.image:
        return []
    images = []
    for file in [prompt.image, *(extra.image for extra in prompt.more_images.all())]:
        with file.open("rb") as handle:
            data = handle.read()
        images.append((data, mimetypes.guess_type(file.name)[0] or "image/png"))
    return images


def _groups(prompt_ids: list[int], checkpoint_id: int | None, k: int) -> Iterator[Group]:
    """Each prompt's completions, K at a time, in a stable order."""
    for start in range(0, len(prompt_ids), 100):
        chunk = prompt_ids[start : start + 100]
        completions = Completion.objects.filter(prompt_id__in=chunk).order_by(
            "prompt_id", "checkpoint_id", "template", "sampling_hash", "sample_index", "id"
        )
        if checkpoint_id:
            completions = completions.filter(checkpoint_id=checkpoint_id)
        by_prompt: dict[int, list[Completion]] = {}
        for completion in completions:
            by_prompt.setdefault(completion.prompt_id, []).append(completion)
        prompts = Prompt.objects.prefetch_related("more_images").in_bulk(chunk)
        for pk in chunk:
            rows = by_prompt.get(pk, [])
            for i in range(0, len(rows), k):
                yield prompts[pk], rows[i : i + k]


def _item_key(prompt: Prompt, completions: list[Completion]) -> str:
    return f"{prompt.pk}:{','.join(str(c.pk) for c in completions)}"


def _item(prompt: Prompt, completions: list[Completion]) -> JudgeItem:
    images = _images(prompt)
    image, mime = images[0] if images else (None, "image/png")
    return JudgeItem(
        key=_item_key(prompt, completions),
        question=prompt.question,
        completions=tuple(c.text for c in completions),
        image=image,
        image_mime=mime,
        more_images=tuple(images[1:]),
        turns=tuple(prompt.turns),
        choices=tuple(prompt.choices),
        answer_index=prompt.answer_index,
        reference_answer=prompt.reference_answer,
        hint=prompt.hint,
        facts={"scene": prompt.metadata.get("scene")} if prompt.metadata.get("scene") else {},
    )


def judge_result_json(result: JudgeResult) -> dict[str, Any]:
    return {
        "reasoning": result.reasoning,
        "ratings": [{**r.scores, "reasoning": r.reasoning} for r in result.ratings],
    }


def judge_rating_rows(
    config: JudgeConfig, completions: list[Completion], result: dict[str, Any], job: Job | None
) -> list[Rating]:
    """A judge's answer (`judge_result_json`'s form) as one unsaved Rating per completion: the
    call's reasoning, then the completion's own, and the five scores."""
    overall = result.get("reasoning", "")
    return [
        Rating(
            completion=completion,
            judge=config,
            reasoning="\n\n".join(x for x in (overall, entry.get("reasoning", "")) if x),
            job=job,
            **{a: entry[a] for a in ATTRIBUTES},
        )
        for completion, entry in zip(completions, result["ratings"], strict=True)
    ]


def _write_ratings(
    config: JudgeConfig, completions: list[Completion], result: dict[str, Any], job: Job
) -> None:
    Rating.objects.bulk_create(
        judge_rating_rows(config, completions, result, job),
        ignore_conflicts=True,  # a completion rated by an earlier attempt keeps its rating
    )


class _JudgeJob:
    """State of one judging run while its outcomes arrive."""

    stored: Any = Rating  # what the judge writes per completion (a rerun skips those)
    call_mode = JudgeCall.Mode.RATE

    def __init__(self, run: Any, config: JudgeConfig) -> None:
        self.run, self.job, self.config = run, run.job, config
        self.pending: dict[str, tuple[Prompt, list[Completion], str]] = {}
        # Calls in flight by cache key, with the groups of the same content waiting on them:
        # POPE repeats an image and question across splits, and two identical calls at
        # once would pay twice and then break the one-answer-per-key constraint.
        self.followers: dict[str, list[tuple[Prompt, list[Completion]]]] = {}
        self.cancelled = False
        m = run.metrics  # the job's, or the chunk's when it runs in chunks
        self.metrics = {
            "calls": m.get("calls", 0),
            "cache_hits": m.get("cache_hits", 0),
            "skipped": 0,
            "failures": m.get("failures", 0),
            "input_tokens": m.get("input_tokens", 0),
            "output_tokens": m.get("output_tokens", 0),
            "cost_usd": m.get("cost_usd", 0.0),
        }
        self.failed_items: list[dict[str, Any]] = list(m.get("failed_items", []))
        # Completions this judge has rated already, read once (a rerun skips them all).
        self.rated: set[int] = set()

    def save_metrics(self) -> None:
        self.run.set_metrics(
            **{
                **self.metrics,
                "cost_usd": round(self.metrics["cost_usd"], 6),
                "failed_items": self.failed_items[-MAX_FAILURES_SHOWN:],
            }
        )

    def advance(self, *, force: bool = True) -> None:
        try:
            self.run.advance(force=force)
        except JobCancelled:
            self.cancelled = True

    def result_json(self, result: Any) -> dict[str, Any]:
        return judge_result_json(result)

    def cache_key(self, item: JudgeItem) -> str:
        return judge_cache_key(self.config, item, self.variant)

    variant = ""  # keeps apart calls that show the same item for another purpose

    def write(self, completions: list[Completion], result: dict[str, Any]) -> None:
        _write_ratings(self.config, completions, result, self.job)

    def groups(self, spec: dict[str, Any]) -> list[Group]:
        """The calls to make: each prompt's completions, `k_per_call` at a time."""
        return list(_groups(spec["prompt_ids"], spec.get("checkpoint_id"), spec["k_per_call"]))

    def call(self, judge: Judge) -> Callable[[JudgeItem], TextResult] | None:
        """How an item is sent: None is the runner's default, the judge rating it."""
        return None

    def load_rated(self, groups: list[Group]) -> None:
        """Note which completions this judge has rated already (a rerun skips them)."""
        ids = [c.pk for _, completions in groups for c in completions]
        for start in range(0, len(ids), 900):  # under SQLite's parameter limit
            self.rated.update(
                self.stored.objects.filter(
                    judge=self.config, completion_id__in=ids[start : start + 900]
                ).values_list("completion_id", flat=True)
            )

    def items_to_call(self, groups: Iterator[Group]) -> Iterator[JudgeItem]:
        """Skip what is rated, answer from the cache what was paid for, yield the rest."""
        for prompt, completions in groups:
            if self.cancelled:
                return
            if all(c.pk in self.rated for c in completions):
                self.metrics["skipped"] += 1
                self.advance(force=False)  # throttled: a rerun skips thousands
                continue
            item = _item(prompt, completions)
            key = self.cache_key(item)
            cached = JudgeCall.objects.filter(cache_key=key, status=JudgeCall.Status.OK).first()
            if cached is not None:
                with transaction.atomic():
                    self.write(completions, cached.result)
                self.metrics["cache_hits"] += 1
                self.save_metrics()
                self.advance()
                continue
            if key in self.followers:
                self.followers[key].append((prompt, completions))
                continue
            self.followers[key] = []
            self.pending[item.key] = (prompt, completions, key)
            yield item

    def record(self, outcome: ItemOutcome) -> None:
        prompt, completions, key = self.pending.pop(outcome.item.key)
        followers = self.followers.pop(key, [])
        call = JudgeCall(
            judge=self.config,
            mode=self.call_mode,
            prompt=prompt,
            completion_ids=[c.pk for c in completions],
            cache_key=key,
            raw_response=outcome.raw,
            attempts=outcome.attempts,
            input_tokens=outcome.usage.input_tokens,
            output_tokens=outcome.usage.output_tokens,
            cost_usd=outcome.cost_usd,
            job=self.job,
        )
        with transaction.atomic():
            if outcome.result is not None:
                call.status = JudgeCall.Status.OK
                call.result = self.result_json(outcome.result)
                call.save()
                self.write(completions, call.result)
                for _, same in followers:
                    self.write(same, call.result)
            else:
                call.status = JudgeCall.Status.FAILED
                call.error = outcome.error
                call.save()
        for follower, _ in followers:  # counted before _count saves the metrics
            if outcome.result is not None:
                self.metrics["cache_hits"] += 1
            else:
                self.metrics["failures"] += 1
                self.failed_items.append(
                    {"prompt": follower.pk, "call": call.pk, "error": outcome.error[:300]}
                )
            self.advance(force=False)
        self._count(outcome, prompt.pk, call.pk)

    def _count(self, outcome: ItemOutcome, prompt_id: int, call_id: int | None) -> None:
        m = self.metrics
        m["calls"] += outcome.attempts
        m["input_tokens"] += outcome.usage.input_tokens
        m["output_tokens"] += outcome.usage.output_tokens
        m["cost_usd"] += outcome.cost_usd
        if outcome.result is None:
            m["failures"] += 1
            self.failed_items.append(
                {"prompt": prompt_id, "call": call_id, "error": outcome.error[:300]}
            )
        self.save_metrics()
        self.advance()


def judge_cache_key(config: JudgeConfig, item: JudgeItem, variant: str = "") -> str:
    """The call cache's key for this judge shown this item (`variant` keeps apart calls that
    show the same item for another purpose: pairwise, an audit's repeats)."""
    return item_cache_key(
        provider=config.provider,
        model=config.model,
        prompt_version=config.prompt_version,
        temperature=config.temperature,
        item=item,
        variant=variant,
    )


def _answer_key(config: JudgeConfig, item: JudgeItem) -> str:
    return item_cache_key(
        provider=f"{config.provider}|answer",
        model=config.model,
        prompt_version=config.prompt_version,
        temperature=config.temperature,
        item=item,
    )


def judge_answer_call(judge: Judge, config: JudgeConfig) -> Callable[[JudgeItem], TextResult]:
    """How this judge answers a question: the oracle from what it knows, a model from the
    versioned answer prompt."""
    from annotation.core.judges.prompt import render_answer_prompt

    own = getattr(judge, "answer", None)
    if own is not None:
        return own

    def answer(item: JudgeItem) -> TextResult:
        prompt = render_answer_prompt(item, config.prompt_version)
        return judge.complete(prompt, item.image, item.image_mime)

    return answer


class _AnswerJob(_JudgeJob):
    """The judge answers each prompt itself; the answers are JudgeCall rows (mode answer)."""

    def groups(self, spec: dict[str, Any]) -> list[Group]:
        prompts = Prompt.objects.in_bulk(spec["prompt_ids"])
        return [(prompts[pk], []) for pk in spec["prompt_ids"] if pk in prompts]

    def call(self, judge: Judge) -> Callable[[JudgeItem], TextResult] | None:
        return judge_answer_call(judge, self.config)

    def load_rated(self, groups: list[Group]) -> None:
        """Nothing to load: what is answered already is found by content key, per item."""

    def items_to_call(self, groups: Iterator[Group]) -> Iterator[JudgeItem]:
        for prompt, _ in groups:
            if self.cancelled:
                return
            item = _item(prompt, [])
            key = _answer_key(self.config, item)
            answered = JudgeCall.objects.filter(cache_key=key, status=JudgeCall.Status.OK)
            # The same content in flight counts as answered: curation finds answers by key.
            if key in self.followers or answered.exists():
                self.metrics["skipped"] += 1
                self.advance(force=False)
                continue
            self.followers[key] = []
            self.pending[item.key] = (prompt, [], key)
            yield item

    def record(self, outcome: ItemOutcome) -> None:
        prompt, _, key = self.pending.pop(outcome.item.key)
        self.followers.pop(key, None)
        ok = outcome.result is not None
        JudgeCall.objects.create(
            judge=self.config,
            mode=JudgeCall.Mode.ANSWER,
            prompt=prompt,
            cache_key=key,
            status=JudgeCall.Status.OK if ok else JudgeCall.Status.FAILED,
            result={"answer": outcome.result.raw} if outcome.result is not None else {},
            raw_response=outcome.raw,
            error=outcome.error,
            attempts=outcome.attempts,
            input_tokens=outcome.usage.input_tokens,
            output_tokens=outcome.usage.output_tokens,
            cost_usd=outcome.cost_usd,
            job=self.job,
        )
        self._count(outcome, prompt.pk, None)


# What a judging job does in each mode: how its work is grouped, what it skips, how it calls.
class _RewardJob(_JudgeJob):
    """A reward model scoring completions: one scalar each, cached like ratings, so that a
    resumed job scores nothing twice; it costs nothing."""

    stored = RewardScore

    def call(self, judge: Any) -> Callable[[JudgeItem], Any]:
        return judge.score

    def result_json(self, result: Any) -> dict[str, Any]:
        return {"rewards": list(result.rewards)}

    def write(self, completions: list[Completion], result: dict[str, Any]) -> None:
        RewardScore.objects.bulk_create(
            [
                RewardScore(completion=c, judge=self.config, reward=reward, job=self.job)
                for c, reward in zip(completions, result["rewards"], strict=True)
            ],
            ignore_conflicts=True,  # scored by an earlier attempt: kept
        )


class _PairwiseJob(_JudgeJob):
    """Pairwise mode: each call shows two completions of a prompt (every pair, in one or
    both orders) and the judge names the better; once all are answered, each completion's
    wins minus losses is stored as the judge's scalar for it (a RewardScore), which the
    reward strategies rank by. Calls are cached like ratings, so a rerun pays nothing."""

    variant = "pairwise"
    stored = RewardScore
    call_mode = JudgeCall.Mode.PAIRWISE

    def __init__(self, run: Any, config: JudgeConfig) -> None:
        super().__init__(run, config)
        self.asked: dict[str, str] = {}  # item key -> cache key, as items_to_call met them

    def cache_key(self, item: JudgeItem) -> str:
        key = super().cache_key(item)
        self.asked[item.key] = key
        return key

    def groups(self, spec: dict[str, Any]) -> list[Group]:
        both = bool(spec.get("both_orders"))
        out: list[Group] = []
        for prompt, completions in _groups(spec["prompt_ids"], spec.get("checkpoint_id"), 10_000):
            by_id = {c.pk: c for c in completions}
            out += [
                (prompt, [by_id[a], by_id[b]])
                for a, b in pairwise.pairs(list(by_id), both_orders=both)
            ]
        return out

    def load_rated(self, groups: list[Group]) -> None:
        return None  # every comparison is asked (or found in the cache) each run

    def call(self, judge: Judge) -> Callable[[JudgeItem], Any]:
        compare = getattr(judge, "compare", None)
        if compare is None:
            raise JobFailed(f"the {self.config.provider} judge cannot compare two answers")
        return compare

    def result_json(self, result: Any) -> dict[str, Any]:
        return pairwise.verdict_json(result)

    def write(self, completions: list[Completion], result: dict[str, Any]) -> None:
        return None  # scores are tallied once every comparison is in (finish)

    def finish(self, groups: list[Group]) -> int:
        """Wins minus losses per completion, from every answered comparison; returns how
        many completions were scored."""
        # The keys items_to_call computed, by item: building the items again would read
        # every prompt's images once more per pair.
        keys = [self.asked.get(_item_key(prompt, pair), "") for prompt, pair in groups]
        answers = dict(
            JudgeCall.objects.filter(
                cache_key__in=set(keys), status=JudgeCall.Status.OK
            ).values_list("cache_key", "result")
        )
        verdicts: dict[int, list[tuple[tuple[int, int], int | None]]] = {}
        for (prompt, (first, second)), key in zip(groups, keys, strict=True):
            if key in answers:
                vote = ((first.pk, second.pk), answers[key]["winner"])
                verdicts.setdefault(prompt.pk, []).append(vote)
        scored = 0
        with transaction.atomic():
            for votes in verdicts.values():
                for completion_id, score in pairwise.net_wins(votes).items():
                    RewardScore.objects.update_or_create(
                        completion_id=completion_id,
                        judge=self.config,
                        defaults={"reward": score, "job": self.job},
                    )
                    scored += 1
        return scored


_JOBS: dict[str, type[_JudgeJob]] = {
    JudgeCall.Mode.RATE: _JudgeJob,
    JudgeCall.Mode.ANSWER: _AnswerJob,
    JudgeCall.Mode.PAIRWISE: _PairwiseJob,
}


def _runs_in_chunks(job_id: int) -> bool:
    """Whether a judging job shards: not a batch (the provider's batch is its parallelism),
    not a panel (its members run as jobs of their own), and no per-minute limits (they are
    the job's, and workers sharing it would each spend them in full)."""
    spec = Job.objects.get(pk=job_id).params
    limits = spec.get("limits") or {}
    config = JudgeConfig.objects.filter(pk=spec.get("judge_config_id")).first()
    return not (
        spec.get("batch")
        or config is None
        or config.provider == "panel"
        or limits.get("requests_per_minute")
        or limits.get("tokens_per_minute")
    )


def judge_run(*, job_id: int) -> None:
    """Run (or resume) a judging job in this process: whole, or chunk after chunk."""
    if _runs_in_chunks(job_id):
        job_run_here(job_id, _plan)
    else:
        _judge_whole(job_id)


def judge_shard(*, job_id: int) -> None:
    """The judge-queue task: a sharded job sends its unfinished chunks to every worker on
    the queue; any other runs whole here."""
    if _runs_in_chunks(job_id):
        job_fan_out(job_id, _plan)
    else:
        _judge_whole(job_id)


def _plan(job: Job) -> list[int]:
    _config(job.params)
    return list(job.params["prompt_ids"])


def _config(spec: dict[str, Any]) -> JudgeConfig:
    config = JudgeConfig.objects.filter(pk=spec["judge_config_id"]).first()
    if config is None:
        raise JobFailed(f"judge configuration #{spec['judge_config_id']} no longer exists")
    return config


def _judge(config: JudgeConfig, spec: dict[str, Any]) -> Judge:
    try:
        return build_judge(config, timeout_s=spec.get("timeout_s", 120.0))
    except ValueError as exc:
        raise JobFailed(str(exc)) from None


def _state(run: Any, config: JudgeConfig, spec: dict[str, Any]) -> _JudgeJob:
    mode = spec.get("mode", JudgeCall.Mode.RATE)
    if mode not in _JOBS:
        raise JobFailed(f"a judging job cannot run in mode {mode!r}")
    return (_RewardJob if config.provider == "reward" else _JOBS[mode])(run, config)


def _judge_online(
    run: Any,
    config: JudgeConfig,
    judge: Judge,
    spec: dict[str, Any],
    limits: RunLimits,
) -> None:
    """Call the judge on `spec`'s prompts, item by item (a whole job's or one chunk's)."""
    state = _state(run, config, spec)
    groups = state.groups(spec)
    run.restart(len(groups))
    state.load_rated(groups)
    try:
        summary = run_items(
            judge,
            state.items_to_call(iter(groups)),
            limits,
            on_outcome=state.record,
            price=lambda usage: cost_usd(config.model, usage),
            should_stop=lambda: state.cancelled,
            call=state.call(judge),
        )
    except FatalJudgeError as exc:
        state.save_metrics()
        raise JobFailed(f"the judge refused: {exc}") from None
    state.save_metrics()
    if state.cancelled:
        raise JobCancelled
    if isinstance(state, _PairwiseJob):  # a chunk holds whole prompts, all their pairs
        run.set_metrics(pairwise_scored=state.finish(groups))
    if summary.stopped_at_max_cost:
        run.set_metrics(stopped_at_max_cost=True)
        run.log(
            f"stopped: the cost reached the limit of ${limits.max_cost_usd}; "
            "resume with a higher limit to rate the rest"
        )


def _judge_whole(job_id: int) -> None:
    with job_running(job_id, resumable=True) as run:
        if run is None:
            return
        spec = run.job.params
        config = _config(spec)
        if config.provider == "panel":
            _run_panel(run, config, spec)
            return
        judge = _judge(config, spec)
        limits = RunLimits(**spec["limits"])
        _log_unpriced(run, config)
        if spec.get("batch"):
            state = _state(run, config, spec)
            groups = state.groups(spec)
            job_progress(run.job, done=0, total=len(groups))
            state.load_rated(groups)
            try:
                run_batch(run, state, judge, groups, spec, limits)
            except (FatalJudgeError, TransientJudgeError) as exc:
                state.save_metrics()
                raise JobFailed(
                    f"the batch did not go through: {exc} (resume to try again)"
                ) from None
            state.save_metrics()
            if state.cancelled:
                raise JobCancelled
            return
        _judge_online(run, config, judge, spec, limits)
        if config.provider == "reward":
            run.set_metrics(**reward_oracle_agreement(config, spec["prompt_ids"]))


def _log_unpriced(run: Any, config: JudgeConfig) -> None:
    if config.provider not in ("oracle", "local", "reward") and price_for(config.model) is None:
        run.log(f"no price is known for {config.model}: its cost shows as 0")


def _judging_chunk(run: ChunkRun) -> None:
    """One chunk of prompts; a job's cost limit is what the other chunks left of it."""
    spec = {**run.job.params, "prompt_ids": run.items}
    config = _config(spec)
    judge = _judge(config, spec)
    limits = RunLimits(**spec["limits"])
    if limits.max_cost_usd is not None:
        spent = sum(
            (m or {}).get("cost_usd", 0.0)
            for m in JobChunk.objects.filter(job=run.job).values_list("metrics", flat=True)
        )
        left = limits.max_cost_usd - spent
        if left <= 0:
            run.set_metrics(stopped_at_max_cost=True)
            run.log(f"not started: the job's cost reached its limit of ${limits.max_cost_usd}")
            return
        limits = replace(limits, max_cost_usd=left)
    if run.chunk.index == 0:
        _log_unpriced(run, config)
    _judge_online(run, config, judge, spec, limits)


_SUMMED = ("calls", "cache_hits", "skipped", "failures", "input_tokens", "output_tokens")


def _merge_judging(job: Job, chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """The job's figures from its chunks': counts and cost add up; a reward judge's
    agreement with the oracle is measured once, over every prompt of the job."""
    merged: dict[str, Any] = {key: sum(m.get(key, 0) for m in chunks) for key in _SUMMED}
    merged["cost_usd"] = round(sum(m.get("cost_usd", 0.0) for m in chunks), 6)
    failed = [f for m in chunks for f in m.get("failed_items", [])]
    merged["failed_items"] = failed[-MAX_FAILURES_SHOWN:]
    if any("pairwise_scored" in m for m in chunks):
        merged["pairwise_scored"] = sum(m.get("pairwise_scored", 0) for m in chunks)
    if any(m.get("stopped_at_max_cost") for m in chunks):
        merged["stopped_at_max_cost"] = True
    config = JudgeConfig.objects.filter(pk=job.params["judge_config_id"]).first()
    if config is not None and config.provider == "reward":
        merged.update(reward_oracle_agreement(config, job.params["prompt_ids"]))
    return merged


chunk_kind(Job.Kind.JUDGING, _judging_chunk, _merge_judging)


def _run_panel(run: Any, config: JudgeConfig, spec: dict[str, Any]) -> None:
    """A panel's job: each member rates the items as its own judging job (its cache, its
    costs; a rerun pays nothing), then the panel's rating of every completion that all
    members rated is their mean or median."""
    try:
        members = panel_members(config.model)
    except ValueError as exc:
        raise JobFailed(str(exc)) from None
    mode, _ = parse_panel_model(config.model)
    job_progress(run.job, done=0, total=len(members) + 1)
    jobs: dict[str, int] = {}
    totals = {"calls": 0, "cache_hits": 0, "failures": 0, "cost_usd": 0.0}
    for member in members:
        member_job = job_create(
            kind=Job.Kind.JUDGING,
            title=f"{member.name} on {len(spec['prompt_ids'])} prompts (panel {config.name})",
            params={**spec, "judge_config_id": member.pk, "mode": JudgeCall.Mode.RATE},
            created_by=run.job.created_by,
        )
        jobs[str(member.pk)] = member_job.pk
        run.set_metrics(member_jobs=jobs)
        judge_run(job_id=member_job.pk)
        member_job.refresh_from_db()
        for key in totals:
            totals[key] += member_job.metrics.get(key, 0)
        if member_job.status != Job.Status.SUCCEEDED:
            raise JobFailed(f"member {member.name} did not finish: {member_job.error}")
        run.advance(force=True)
    completions = Completion.objects.filter(prompt_id__in=spec["prompt_ids"])
    if spec.get("checkpoint_id"):
        completions = completions.filter(checkpoint_id=spec["checkpoint_id"])
    ids = list(completions.values_list("pk", flat=True))
    by_completion: dict[int, list[dict[str, int]]] = {}
    for start in range(0, len(ids), 900):
        for r in Rating.objects.filter(
            judge__in=members, completion_id__in=ids[start : start + 900]
        ).values("completion_id", *ATTRIBUTES):
            by_completion.setdefault(r["completion_id"], []).append(r)
    complete = {c: rs for c, rs in by_completion.items() if len(rs) == len(members)}
    Rating.objects.bulk_create(
        [
            Rating(
                completion_id=c,
                judge=config,
                job=run.job,
                reasoning=f"the {mode} of {len(members)} judges",
                **panel_combine(rs, mode),
            )
            for c, rs in complete.items()
        ],
        ignore_conflicts=True,  # rated by an earlier attempt: kept
    )
    totals["cost_usd"] = round(totals["cost_usd"], 6)
    run.set_metrics(
        **totals,
        member_jobs=jobs,
        panel_rated=len(complete),
        panel_missing=len(ids) - len(complete),
    )
    run.advance(force=True)


def reward_oracle_agreement(config: JudgeConfig, prompt_ids: list[int]) -> dict[str, Any]:
    """How often a reward judge orders two completions of a prompt as the oracle's score
    sum does, over the pairs the oracle does not tie: on all the prompts given, and on the
    held-out ones alone (validation and test splits: the reward model never trained on
    them). Empty where the oracle rated none of them."""
    from annotation.core.agreement import pairwise_agreement

    rewards = dict(
        RewardScore.objects.filter(judge=config, completion__prompt_id__in=prompt_ids).values_list(
            "completion_id", "reward"
        )
    )
    truth: dict[int, float] = {}
    for rating in Rating.objects.filter(
        judge__provider="oracle", completion_id__in=list(rewards)
    ).order_by("completion_id", "id"):
        truth.setdefault(rating.completion_id, sum(getattr(rating, a) for a in ATTRIBUTES))
    if not truth:
        return {}
    groups: dict[tuple[int, bool], list[int]] = {}
    completions = Completion.objects.filter(pk__in=list(truth)).select_related("prompt")
    for c in completions.only("pk", "prompt_id", "prompt__split"):
        groups.setdefault((c.prompt_id, c.prompt.split != "train"), []).append(c.pk)
    every = pairwise_agreement(list(groups.values()), rewards, truth)
    heldout = pairwise_agreement([g for (_, h), g in groups.items() if h], rewards, truth)
    return {
        "oracle_agreement": every.rate,
        "oracle_pairs": every.pairs,
        "oracle_agreement_heldout": heldout.rate,
        "oracle_pairs_heldout": heldout.pairs,
    }


def judge_rewriter(config: JudgeConfig) -> Callable[[str], str]:
    """A text -> text function through the judge, each answer kept (JudgeCall, mode rewrite)
    so that building the same recipe again pays nothing."""
    judge = build_judge(config)

    def rewrite(text: str) -> str:
        import hashlib

        key = hashlib.sha256(
            "\x1f".join(
                [config.provider, config.model, str(config.temperature), "rewrite", text]
            ).encode()
        ).hexdigest()
        kept = JudgeCall.objects.filter(cache_key=key, status=JudgeCall.Status.OK).first()
        if kept is not None:
            return str(kept.result["text"])
        result = judge.complete(text)
        JudgeCall.objects.create(
            judge=config,
            mode=JudgeCall.Mode.REWRITE,
            cache_key=key,
            status=JudgeCall.Status.OK,
            result={"text": result.text},
            raw_response=result.text,
            attempts=1,
            input_tokens=result.usage.input_tokens,
            output_tokens=result.usage.output_tokens,
            cost_usd=cost_usd(config.model, result.usage),
        )
        return result.text

    return rewrite


def judge_answers(*, config: JudgeConfig, prompts: list[Prompt]) -> dict[int, str]:
    """The judge's own answer to each prompt, found by the content hash of the call.

    An answer job asks once per content: prompts with the same image, question and truth
    (POPE repeats them across categories, two sources may share items) share one JudgeCall,
    which names only the first of them. The key is the one the job computes, so every
    prompt whose content was answered gets the answer; not by judge id either, so a
    configuration identical to one that already answered finds the answer and pays nothing.
    """
    keys = {prompt.pk: _answer_key(config, _item(prompt, [])) for prompt in prompts}
    found = dict(
        JudgeCall.objects.filter(
            cache_key__in=set(keys.values()),
            mode=JudgeCall.Mode.ANSWER,
            status=JudgeCall.Status.OK,
        ).values_list("cache_key", "result")
    )
    return {pk: found[key].get("answer", "") for pk, key in keys.items() if key in found}
