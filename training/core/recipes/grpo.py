"""GRPO with a verifiable reward (issue 17.4), through TRL's GRPOTrainer, which takes
vision-language models in TRL 1.16 (prompts with images; generation by the policy itself,
inside this runner process).

The data is an SFT export whose assistant turn is each prompt's reference answer (the
`reference_sft` strategy makes one): the prompt is the conversation before it, and the
reward checks each sampled answer against it (training/core/verifiable.py): 1 for the
right answer, plus `format_reward_weight` x 1 for an answer in the form asked. No judge.

`main(config)` reads top to bottom: trainer arguments, data, model, trainer, train, save.
TRL logs the reward's mean and spread (`reward`, `reward_std`) and the completion lengths,
which the run page draws live.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from trl import GRPOConfig, GRPOTrainer

from training.core import verifiable
from training.core.recipes import common
from training.core.recipes.config import TrainConfig

SFT_COLUMNS = ("images", "messages")


def _text(message: dict[str, Any]) -> str:
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(part.get("text") or "" for part in content if part.get("type") == "text")


def to_prompts(row: dict[str, Any]) -> dict[str, Any]:
    """An SFT row as GRPO reads it: the conversation up to the last assistant turn, and
    that turn's text as the reference answer."""
    messages = row["messages"]
    if not messages or messages[-1]["role"] != "assistant":
        raise ValueError("an SFT row for GRPO ends with the assistant's reference answer")
    return {"prompt": messages[:-1], "reference": _text(messages[-1])}


def _answers(completions: list[Any]) -> list[str]:
    return [c[-1]["content"] if isinstance(c, list) else str(c) for c in completions]


def answer_reward(completions: list[Any], reference: list[str], **_: Any) -> list[float | None]:
    return [
        verifiable.answer_reward(a, r)
        for a, r in zip(_answers(completions), reference, strict=True)
    ]


def format_reward(completions: list[Any], reference: list[str], **_: Any) -> list[float | None]:
    return [
        verifiable.format_reward(a, r)
        for a, r in zip(_answers(completions), reference, strict=True)
    ]


def main(
    config: TrainConfig,
    *,
    callbacks: Sequence[Any] = (),
    report: common.Report | None = None,
) -> common.RunResult:
    """Train a policy with GRPO as `config` says and save it to OUTPUT_DIR/final."""
    device, dtype = common.resolve_device(config)
    has_eval = bool(config.eval_file or config.eval_fraction)
    arguments = common.trainer_arguments(config, device=device, dtype=dtype, has_eval=has_eval)
    arguments.pop("max_length")  # GRPO bounds the prompt and the completion apart
    args = common.build_args(
        GRPOConfig,
        **arguments,
        beta=config.grpo_beta,
        loss_type=config.grpo_loss_type,
        num_generations=config.num_generations,
        max_completion_length=config.max_completion_length,
        temperature=config.generation_temperature,
        reward_weights=[1.0, config.format_reward_weight],
        log_completions=False,
    )

    train, evals = common.load_train_and_eval(config, SFT_COLUMNS)
    train = train.map(to_prompts, remove_columns=["messages"])
    if evals is not None:
        evals = evals.map(to_prompts, remove_columns=["messages"])
    else:
        train, evals = common.split_off_eval(train, config.eval_fraction, config.seed)

    policy = common.load_model(config, device=device, dtype=dtype)
    trainer = GRPOTrainer(
        model=policy.model,
        reward_funcs=[answer_reward, format_reward],
        args=args,
        train_dataset=train,
        eval_dataset=evals,
        processing_class=policy.processor,
        peft_config=common.lora_config(config, common.model_family(policy.model)),
        callbacks=[common.SaveConfigCallback(config), *callbacks],
    )
    return common.train_and_save(trainer, config, policy.processor)
