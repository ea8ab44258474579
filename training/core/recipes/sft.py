"""Supervised fine-tuning on an exported SFT parquet (images / messages), with TRL; the
`steerlm` recipe is the same on a SteerLM export, with the attribute label out of the loss.

`main(config)` reads top to bottom: trainer arguments, data, model, collator, trainer,
train, save. The loss covers the assistant turn only (`assistant_only_loss`, through the
chat template's {% generation %} markers): REFERENCE measured that the tiny model learns
the prompt text instead of the answer when the loss covers the whole sequence.

SteerLM label masking. The export puts the label where NeMo-Aligner does, at the start of
the assistant turn, as its own text part "{label}\\n" before the response. The generation
markers cover the whole turn, so TRL would train on the label too; NeMo masks it (the label
is a condition, not something to generate). `SteerLMCollator` finds the label's tokens at the
head of each row's trainable span, checks them against the label's own tokenization, and
sets them to -100. A row whose label tokens cannot be found there (a chat template or
tokenizer that merges the label with its neighbours) raises instead of silently training on
the label.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from trl import SFTConfig, SFTTrainer
from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

from training.core.recipes import common
from training.core.recipes.config import ConfigError, TrainConfig

SFT_COLUMNS = ("images", "messages")
# Tokens a chat template may put between the start of the trainable span and the label
# (our template opens the assistant turn with a space, its own token).
_LABEL_SEARCH = 3


def steerlm_label_part(messages: list[dict[str, Any]]) -> str | None:
    """The label part ("{label}\\n") of the last assistant turn of a SteerLM export row."""
    for message in reversed(messages):
        if message["role"] != "assistant":
            continue
        content = message["content"]
        parts = [p for p in content if p.get("type") == "text"] if isinstance(content, list) else []
        if len(parts) >= 2 and (parts[0].get("text") or "").endswith("\n"):
            return parts[0]["text"]
        return None
    return None


def keep_last_span(labels: Any) -> None:
    """Mask (in place) every trainable label of a row but its last contiguous span.

    In a conversation the chat template marks every assistant turn for the loss; the earlier
    ones are the file's context, not the answer curated for this row (a rejection-sampling
    pick, a SteerLM response). A single-turn row has one span and is left as it is."""
    trainable = (labels != -100).nonzero().flatten().tolist()
    if not trainable:
        return
    start = trainable[-1]
    while start - 1 >= 0 and labels[start - 1] != -100:
        start -= 1
    labels[:start] = -100


@dataclass
class FinalTurnCollator(common.VisionCollator):
    """VisionCollator whose loss covers the final assistant turn only (`keep_last_span`)."""

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = super().__call__(examples)
        for labels in batch["labels"]:
            keep_last_span(labels)
        return batch


@dataclass
class SteerLMCollator(FinalTurnCollator):
    """FinalTurnCollator that also masks each row's SteerLM label out of the labels."""

    tokenizer: Any = None

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        label_parts = [steerlm_label_part(example["messages"]) for example in examples]
        batch = super().__call__(examples)
        for row, part in enumerate(label_parts):
            if part is not None:
                self._mask(batch["input_ids"][row], batch["labels"][row], part)
        return batch

    def _mask(self, input_ids: Any, labels: Any, part: str) -> None:
        trainable = (labels != -100).nonzero()
        if len(trainable) == 0:
            return  # truncated away entirely; nothing to mask
        start = int(trainable[0])
        ids = input_ids.tolist()
        # The label alone, and with the space a template may glue in front of it.
        for text in (part, " " + part):
            label_ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            for offset in range(_LABEL_SEARCH):
                at = start + offset
                if ids[at : at + len(label_ids)] == label_ids:
                    labels[start : at + len(label_ids)] = -100
                    return
        raise ValueError(
            f"cannot find the SteerLM label {part!r} at the start of the assistant turn "
            "(the tokenizer merges it with the text around it); it would be trained on"
        )


def training_chat_template(processor: Any) -> str | None:
    """The chat template the loss mask is read from: the processor's own when it marks the
    assistant turn ({% generation %}), else TRL's training variant of it (TRL ships one for
    Qwen2-VL / Qwen2.5-VL, Idefics3, LLaVA-NeXT, ...: what SFTTrainer swaps in itself, but
    our collator is built here). None means the processor's own.

    A template with no markers and no known variant would mask every token: the loss would
    be 0 and nothing would train, silently; refused instead.
    """
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    if has_generation_markers(processor.chat_template):
        return None
    template = get_training_chat_template(processor)
    if template is None:
        raise ConfigError(
            "the checkpoint's chat template does not mark the assistant turn with "
            "{% generation %} ... {% endgeneration %}, and TRL has no training variant of it: "
            "assistant-only loss would train on nothing; add the markers to its "
            "chat_template.jinja"
        )
    return template


def main(
    config: TrainConfig,
    *,
    callbacks: Sequence[Any] = (),
    report: common.Report | None = None,
) -> common.RunResult:
    """Fine-tune on `config.train_file` (SFT or SteerLM) and save to OUTPUT_DIR/final."""
    device, dtype = common.resolve_device(config)
    has_eval = bool(config.eval_file or config.eval_fraction)
    # Built first: SFTConfig checks its own arguments before a model is loaded.
    args = common.build_args(
        SFTConfig,
        **common.trainer_arguments(config, device=device, dtype=dtype, has_eval=has_eval),
        assistant_only_loss=True,
    )

    train, evals = common.load_train_and_eval(config, SFT_COLUMNS)
    if evals is None:
        train, evals = common.split_off_eval(train, config.eval_fraction, config.seed)

    policy = common.load_model(config, device=device, dtype=dtype)
    processor = policy.processor
    template = training_chat_template(processor)

    def collator(max_length: int | None) -> common.VisionCollator:
        inner = DataCollatorForVisionLanguageModeling(
            processor, max_length=max_length, assistant_only_loss=True, chat_template=template
        )
        if config.recipe == "steerlm":
            return SteerLMCollator(inner, config.max_image_pixels, tokenizer=processor.tokenizer)
        return FinalTurnCollator(inner, config.max_image_pixels)

    common.check_max_length(config.max_length, train, collator(None))
    trainer = SFTTrainer(
        model=policy.model,
        args=args,
        data_collator=collator(config.max_length),
        train_dataset=train,
        eval_dataset=evals,
        processing_class=processor,
        peft_config=common.lora_config(config, common.model_family(policy.model)),
        callbacks=[common.SaveConfigCallback(config), *callbacks],
    )
    return common.train_and_save(trainer, config, processor)
