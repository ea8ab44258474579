"""Online and mixed DPO (issue 17.2-3, seed 002 section 2.3 and Equation 4): at every step
the policy answers each prompt of the batch K times, a ranker scores the answers, and the
DPO loss trains on the best and the worst; with probability `mixed_lambda` a row trains on
its stored offline pair instead (mixed DPO; 0 is purely online, 1 is offline DPO).

Why not TRL's OnlineDPOTrainer (trl.experimental.online_dpo in TRL 1.16): it samples
exactly two answers per prompt, has no way to mix in a dataset's own pairs, and reads one
`image` column where the exports hold `images`. Here a DPOTrainer subclass swaps each
batch for the pairs it builds, so the loss, the reference (the adapter switched off under
LoRA, a frozen copy otherwise) and the logged metrics are DPO's own, and sampling goes
through the project's generation core: one seed per (prompt, step, sample), so a resumed
run draws what an uninterrupted one would have.

Data: a DPO export (its pairs are the offline half; its prompts are asked online).
Rankers (`online_ranker`), all run here, in the runner process:
- "verifiable": the answer checked against the row's `reference` column (the prompt's
  reference answer), plus `format_reward_weight` for an answer in the form asked;
- "reward:PATH": a reward model trained by the `reward` recipe (recipes/reward.py);
- "judge:local:PATH", "judge:openai:MODEL", "judge:gemini:MODEL": a VLM or API judge
  rating the K answers in one call, through the judge core's runner with a file cache
  (recipes/judge_ranker.py).
A prompt whose K answers all score the same gives no pair and sits the step out.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import torch
from trl import DPOConfig, DPOTrainer
from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

from training.core import verifiable
from training.core.generation.core import _generated_lengths, clean_text, generate_kwargs
from training.core.generation.sampling import SamplingParams, row_seed
from training.core.modeling import LoadedPolicy, encode_prompts
from training.core.recipes import common
from training.core.recipes.config import TrainConfig

ROWS = "rows"  # the batch key under which the collator hands the raw rows on
EXTRA_COLUMNS = ("reference", "prompt_id")
Ranker = Callable[[list[dict[str, Any]], list[str]], list[float]]


def _assistant(text: str) -> list[dict[str, Any]]:
    return [{"role": "assistant", "content": [{"type": "text", "text": text}]}]


def best_and_worst(scores: Sequence[float]) -> tuple[int, int] | None:
    """Indices of the best and the worst answer (the first of equals), None on a tie."""
    best = max(range(len(scores)), key=lambda i: scores[i])
    worst = min(range(len(scores)), key=lambda i: scores[i])
    return None if scores[best] == scores[worst] else (best, worst)


def verifiable_ranker(format_weight: float) -> Ranker:
    def rank(rows: list[dict[str, Any]], answers: list[str]) -> list[float]:
        out = []
        for row, answer in zip(rows, answers, strict=True):
            reference = row.get("reference") or ""
            out.append(
                verifiable.answer_reward(answer, reference)
                + format_weight * verifiable.format_reward(answer, reference)
            )
        return out

    return rank


def reward_model_ranker(path: str, config: TrainConfig, device: str, dtype: str) -> Ranker:
    """Scores from a reward model checkpoint (its folder: the adapter or full model and the
    head); it stays in memory beside the policy for the whole run."""
    from training.core.recipes.reward import load_reward_model_at

    model, processor = load_reward_model_at(path, device=device, dtype=dtype)
    collator = common.VisionCollator(
        DataCollatorForVisionPreference(processor), config.max_image_pixels
    )

    def rank(rows: list[dict[str, Any]], answers: list[str]) -> list[float]:
        pairs = [
            {"images": r["images"], "prompt": r["prompt"], "chosen": _assistant(a)}
            for r, a in zip(rows, answers, strict=True)
        ]
        return model.scores(collator, pairs, config.per_device_eval_batch_size)

    return rank


def make_ranker(config: TrainConfig, device: str, dtype: str) -> Ranker:
    if config.online_ranker == "verifiable":
        return verifiable_ranker(config.format_reward_weight)
    if config.online_ranker.startswith("judge:"):
        from training.core.recipes.judge_ranker import JudgeRanker, build_judge

        judge = build_judge(config.online_ranker.removeprefix("judge:"))
        return JudgeRanker(judge, cache_dir=config.output_dir, k=config.num_generations)
    return reward_model_ranker(config.online_ranker.removeprefix("reward:"), config, device, dtype)


class OnlinePairsDPOTrainer(DPOTrainer):
    """DPOTrainer whose training batches are rebuilt each step from the policy's samples."""

    def __init__(self, *args: Any, config: TrainConfig, ranker: Ranker, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.run_config = config
        self.ranker = ranker
        self.vlm_processor: Any = kwargs["processing_class"]  # a multimodal processor
        self.pair_collator = common.VisionCollator(
            DataCollatorForVisionPreference(self.vlm_processor, max_length=config.max_length),
            config.max_image_pixels,
        )
        self.generated_tokens = 0

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        columns: list[str] = list(self._signature_columns or [])
        self._signature_columns = [*columns, *EXTRA_COLUMNS]  # type: ignore[assignment]

    # -- one step -------------------------------------------------------------------------

    def training_step(
        self, model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None
    ) -> torch.Tensor:
        rows = inputs.pop(ROWS)
        # As Trainer.training_step does first: a step whose prompts all tie never reaches
        # it, and the logged metrics must still count as training's, not an evaluation's.
        model.train()
        pairs = self.build_pairs(model, rows)
        if not pairs:  # every prompt tied: nothing to learn from this batch
            return torch.zeros((), device=self.args.device)
        batch = self.pair_collator(pairs)
        return super().training_step(model, batch, num_items_in_batch)

    def prediction_step(self, model: Any, inputs: dict[str, Any], *args: Any, **kw: Any) -> Any:
        inputs.pop(ROWS, None)  # evaluation scores the held-out offline pairs
        return super().prediction_step(model, inputs, *args, **kw)

    def build_pairs(self, model: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each row's pair for this step: its offline pair with probability lambda, else
        the best and worst of K fresh answers (none when they tie)."""
        config = self.run_config
        step = self.state.global_step
        offline: list[dict[str, Any]] = []
        online: list[dict[str, Any]] = []
        for i, row in enumerate(rows):
            # Seeded by the step, so that a resumed run draws what an unbroken one did.
            draw = random.Random(f"{config.seed}:{step}:{i}:{row.get('prompt_id')}").random()  # noqa: S311
            (offline if draw < config.mixed_lambda else online).append(row)
        pairs = [{k: row[k] for k in ("images", "prompt", "chosen", "rejected")} for row in offline]
        scores: list[float] = []
        ties = 0
        if online:
            answers = self.sample(model, online, step)
            k = config.num_generations
            flat_rows = [row for row in online for _ in range(k)]
            scores = self.ranker(flat_rows, answers)
            for i, row in enumerate(online):
                group = scores[i * k : (i + 1) * k]
                picked = best_and_worst(group)
                if picked is None:
                    ties += 1
                    continue
                best, worst = picked
                pairs.append(
                    {
                        "images": row["images"],
                        "prompt": row["prompt"],
                        "chosen": _assistant(answers[i * k + best]),
                        "rejected": _assistant(answers[i * k + worst]),
                    }
                )
        metrics = self._metrics["train"]
        metrics["online/offline_fraction"].append(len(offline) / len(rows))
        metrics["online/pairs"].append(len(pairs))
        if online:
            mean = sum(scores) / len(scores)
            metrics["online/reward"].append(mean)
            metrics["online/reward_std"].append(
                (sum((s - mean) ** 2 for s in scores) / len(scores)) ** 0.5
            )
            metrics["online/tied_fraction"].append(ties / len(online))
        metrics["online/generated_tokens"] = [float(self.generated_tokens)]
        if hasattr(self.ranker, "calls"):  # a judge: what ranking has cost so far
            metrics["online/judge_calls"] = [float(self.ranker.calls)]  # type: ignore[attr-defined]
            metrics["online/judge_cost_usd"] = [float(self.ranker.cost_usd)]  # type: ignore[attr-defined]
        return pairs

    @torch.no_grad()
    def sample(self, model: Any, rows: list[dict[str, Any]], step: int) -> list[str]:
        """K answers to each row's prompt from the current policy, rows in order."""
        config = self.run_config
        processor = self.vlm_processor
        params = SamplingParams(
            k=config.num_generations,
            temperature=config.generation_temperature,
            max_new_tokens=config.max_completion_length,
            seed=config.seed,
        )
        policy = LoadedPolicy(
            model=model,
            processor=processor,
            device=str(self.args.device),
            dtype=str(next(model.parameters()).dtype).removeprefix("torch."),
            name="policy",
        )
        texts = [
            processor.apply_chat_template(r["prompt"], add_generation_prompt=True) for r in rows
        ]
        images = [
            common.fit_pixel_budget(image, config.max_image_pixels)
            for r in rows
            for image in r["images"]
        ] or None
        inputs = encode_prompts(policy, texts, images)
        seeds = [
            row_seed(config.seed, f"{r.get('prompt_id')}:{step}:{i}", j)
            for i, r in enumerate(rows)
            for j in range(params.k)
        ]
        kwargs = generate_kwargs(policy, params, seeds)
        kwargs["num_return_sequences"] = params.k
        was_training = model.training
        model.eval()  # no dropout while sampling
        try:
            output = model.generate(**inputs, **kwargs)
        finally:
            model.train(was_training)
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        tokenizer = processor.tokenizer
        lengths = _generated_lengths(new_tokens, tokenizer.eos_token_id, tokenizer.pad_token_id)
        self.generated_tokens += sum(lengths)
        return [clean_text(t) for t in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]


class RowsCollator:
    """The offline pairs collated as DPO's collator does (evaluation reads them), and the
    rows themselves under ROWS for the step to rebuild its pairs from."""

    def __init__(self, pairs: common.VisionCollator) -> None:
        self.pairs = pairs

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.pairs(examples)
        batch[ROWS] = [dict(example) for example in examples]
        return batch


def check_rows(dataset: Any, config: TrainConfig) -> None:
    if config.online_ranker != "verifiable" or config.mixed_lambda >= 1:
        return
    if "reference" not in dataset.column_names:
        raise ValueError(
            "the verifiable ranker checks answers against a `reference` column, which "
            f"{config.train_file} lacks (export the version again, or rank with reward:PATH)"
        )
    missing = sum(1 for value in dataset["reference"] if not (value or "").strip())
    if missing:
        raise ValueError(
            f"{missing} of {len(dataset)} rows have no reference answer to check samples "
            "against: curate from prompts that have one, or rank with reward:PATH"
        )


def main(
    config: TrainConfig,
    *,
    callbacks: Sequence[Any] = (),
    report: common.Report | None = None,
) -> common.RunResult:
    """Train a policy with online (or mixed) DPO as `config` says; save OUTPUT_DIR/final."""
    device, dtype = common.resolve_device(config)
    has_eval = bool(config.eval_file or config.eval_fraction)
    args = common.build_args(
        DPOConfig,
        **common.trainer_arguments(config, device=device, dtype=dtype, has_eval=has_eval),
        beta=config.beta,
        loss_type=list(config.loss_type),
        loss_weights=config.loss_weights,
        label_smoothing=config.label_smoothing,
        precompute_ref_log_probs=False,  # the pairs are new at every step
    )

    train, evals = common.load_train_and_eval(config, ("images", "prompt", "chosen", "rejected"))
    check_rows(train, config)
    if evals is None:
        train, evals = common.split_off_eval(train, config.eval_fraction, config.seed)

    policy = common.load_model(config, device=device, dtype=dtype)
    processor = policy.processor
    ranker = make_ranker(config, device, dtype)
    pairs = common.VisionCollator(
        DataCollatorForVisionPreference(processor, max_length=config.max_length),
        config.max_image_pixels,
    )
    trainer = OnlinePairsDPOTrainer(
        model=policy.model,
        args=args,
        data_collator=RowsCollator(pairs),
        train_dataset=train,
        eval_dataset=evals,
        processing_class=processor,
        peft_config=common.lora_config(config, common.model_family(policy.model)),
        callbacks=[common.SaveConfigCallback(config), *callbacks],
        config=config,
        ranker=ranker,
    )
    return common.train_and_save(trainer, config, processor)
