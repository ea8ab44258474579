"""A reward model for a vision-language model (issue 17.1): the policy's backbone with a
scalar head on the last token's hidden state, trained with the Bradley-Terry loss
-log s(r(chosen) - r(rejected)) on the pairs of a DPO export.

TRL 1.16's RewardTrainer is text-only (AutoModelForSequenceClassification, a tokenizer and
a text collator), so this is a small recipe on transformers' Trainer: TRL's vision pair
collator lays chosen and rejected out as one batch of 2B rows, exactly as DPO sees them.

Saved next to the backbone (the LoRA adapter, or the full model) in OUTPUT_DIR/final:
`reward_head.safetensors` and `reward_model.json`; `load_reward_model` reads a checkpoint
back and `RewardModel.scores` rates rows. Pairwise accuracy (chosen scored above
rejected) is logged as `rewards/accuracies` in training and `eval_rewards/accuracies` on
the held-out pairs, as DPO's implicit reward is, so the run page draws both live.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Trainer, TrainingArguments

from training.core.recipes import common
from training.core.recipes.config import REWARD_HEADS, TrainConfig

REWARD_HEAD_FILE = "reward_head.safetensors"
REWARD_CONFIG_FILE = "reward_model.json"
PAIR_COLUMNS = ("images", "prompt", "chosen", "rejected")


class RewardModel(nn.Module):
    """`backbone` (an image-text-to-text model, possibly a PeftModel) and a scalar head.

    Heads (`reward_head`):
    - "likelihood": a learned scale times the answer's summed log-likelihood under the
      backbone; the scalar reads the LM head, which already weighs answers against the
      image (a generative reward model, initialised at the policy's own preferences);
    - "last_token": a linear map of the last token's final hidden state (the classic
      sequence-classification head). From the tiny start on shapes pairs it stayed at
      chance (0.47-0.52 held out, 300-600 steps, LoRA or full, lr 4e-4 to 3e-3): a fresh
      head has to learn "answer x image x question" from some 800 pairs.
    """

    _keys_to_ignore_on_save = None  # read by Trainer when it saves a plain nn.Module

    def __init__(self, backbone: Any, hidden_size: int, head: str = "likelihood") -> None:
        super().__init__()
        if head not in REWARD_HEADS:
            raise ValueError(f"reward_head must be one of {', '.join(REWARD_HEADS)}, not {head!r}")
        self.backbone = backbone
        self.kind = head
        if head == "likelihood":
            self.head = nn.Linear(1, 1, bias=False)
            nn.init.ones_(self.head.weight)
        else:
            self.head = nn.Linear(hidden_size, 1, bias=False)
            nn.init.normal_(self.head.weight, std=1 / (hidden_size + 1) ** 0.5)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **rest: Any) -> Any:
        completion_mask = rest.pop("completion_mask", None)
        if self.kind == "likelihood":
            if completion_mask is None:
                raise ValueError("the likelihood head needs the batch's completion_mask")
            out = self.backbone(
                input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **rest
            )
            logps = torch.log_softmax(out.logits[:, :-1].float(), dim=-1)
            token = logps.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
            answer = (token * completion_mask[:, 1:].to(token.dtype)).sum(dim=1, keepdim=True)
            return self.head(answer.to(self.head.weight.dtype)).squeeze(-1)
        out = self.backbone(
            input_ids=input_ids,
            attention_mask=attention_mask,
            output_hidden_states=True,
            use_cache=False,
            logits_to_keep=1,
            **rest,
        )
        hidden = out.hidden_states[-1]
        # Rows are flush left: the last attended position is the answer's last token.
        positions = torch.arange(attention_mask.size(1), device=attention_mask.device)
        last = (attention_mask * positions).argmax(dim=1)
        final = hidden[torch.arange(hidden.size(0), device=hidden.device), last]
        return self.head(final.to(self.head.weight.dtype)).squeeze(-1)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """What trains (the adapter or the unfrozen weights, and the head): what a
        checkpoint keeps, so that a LoRA run on a 7B backbone does not write 14 GB."""
        return {n: p.detach() for n, p in self.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def scores(self, collator: Any, rows: Sequence[dict[str, Any]], batch_size: int) -> list[float]:
        """The reward of each row's `chosen` answer (rows laid out as pairs)."""
        device = next(self.parameters()).device
        dtype = next(self.backbone.parameters()).dtype
        out: list[float] = []
        for start in range(0, len(rows), batch_size):
            chunk = [{**r, "rejected": r["chosen"]} for r in rows[start : start + batch_size]]
            batch = {k: v.to(device) for k, v in collator(chunk).items()}
            if "pixel_values" in batch:
                batch["pixel_values"] = batch["pixel_values"].to(dtype)
            out.extend(self(**batch)[: len(chunk)].float().tolist())
        return out


def bradley_terry(rewards: torch.Tensor) -> dict[str, torch.Tensor]:
    """Loss, pairwise accuracy and margin of a [chosen..., rejected...] batch of rewards."""
    chosen, rejected = rewards.chunk(2)
    margin = chosen - rejected
    return {
        "loss": -F.logsigmoid(margin).mean(),
        # DPO's names for the same things, so that the run page draws them the same way.
        "rewards/accuracies": (margin > 0).float().mean(),
        "rewards/margins": margin.mean(),
        "rewards/chosen": chosen.mean(),
        "rewards/rejected": rejected.mean(),
    }


class BradleyTerryTrainer(Trainer):
    """Trainer whose loss is Bradley-Terry on pair batches; logs the pairwise accuracy."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._metrics: dict[str, dict[str, list[float]]] = {
            "train": defaultdict(list),
            "eval": defaultdict(list),
        }

    def compute_loss(
        self,
        model: Any,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        terms = bradley_terry(model(**inputs))
        mode = "train" if model.training else "eval"
        for name, value in terms.items():
            if name != "loss":
                self._metrics[mode][name].append(value.item())
        return (terms["loss"], {}) if return_outputs else terms["loss"]

    def prediction_step(
        self,
        model: Any,
        inputs: dict[str, Any],
        prediction_loss_only: bool,
        ignore_keys: Any = None,
    ) -> tuple[Any, None, None]:
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "eval" if any(k.startswith("eval_") for k in logs) else "train"
        prefix = "eval_" if mode == "eval" else ""
        for name, values in self._metrics[mode].items():
            if values:
                logs[f"{prefix}{name}"] = sum(values) / len(values)
        self._metrics[mode].clear()
        super().log(logs, start_time)

    def _save(self, output_dir: str | None = None, state_dict: Any = None) -> None:
        # Checkpoints keep what trains; resuming loads it back non-strictly (Trainer does).
        model: Any = self.model
        super()._save(output_dir, state_dict=model.trainable_state())


def save_reward_model(model: RewardModel, processor: Any, config: TrainConfig) -> Path:
    """OUTPUT_DIR/final: the backbone (adapter or full), the head, the processor, configs."""
    from safetensors.torch import save_file

    from training.core.protocol import CONFIG_FILE, FINAL_DIR

    final = Path(config.output_dir) / FINAL_DIR
    model.backbone.save_pretrained(str(final))
    processor.save_pretrained(str(final))
    save_file({"weight": model.head.weight.detach().float().cpu()}, str(final / REWARD_HEAD_FILE))
    meta = {
        "hidden_size": _hidden_size(model.backbone),
        "head": model.kind,
        "base": config.model_path,
    }
    (final / REWARD_CONFIG_FILE).write_text(json.dumps(meta, indent=2))
    (final / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2))
    return final


def is_reward_model(folder: str | Path) -> bool:
    return (Path(folder) / REWARD_HEAD_FILE).is_file()


def load_reward_model(
    model_path: str,
    *,
    adapter_path: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
) -> tuple[RewardModel, Any]:
    """(the reward model, its processor) from a saved one: the head lies with the adapter
    when there is one, else with the full model."""
    from safetensors.torch import load_file

    from training.core.modeling import load_policy

    folder = Path(adapter_path or model_path)
    if not is_reward_model(folder):
        raise ValueError(f"{folder} is not a reward model: it has no {REWARD_HEAD_FILE}")
    policy = load_policy(model_path, adapter_path=adapter_path, device=device, dtype=dtype)
    meta = json.loads((folder / REWARD_CONFIG_FILE).read_text())
    model = RewardModel(policy.model, int(meta["hidden_size"]), meta.get("head", "last_token"))
    model.head.load_state_dict(load_file(str(folder / REWARD_HEAD_FILE)))
    model.to(policy.device).eval()
    return model, policy.processor


def load_reward_model_at(
    folder: str | Path, *, device: str | None = None, dtype: str | None = None
) -> tuple[RewardModel, Any]:
    """A saved reward model from its folder alone: a LoRA one names its base model in
    reward_model.json; a fully fine-tuned one is its own base."""
    folder = Path(folder)
    if not is_reward_model(folder):
        raise ValueError(f"{folder} is not a reward model: it has no {REWARD_HEAD_FILE}")
    if (folder / "adapter_config.json").is_file():
        base = json.loads((folder / REWARD_CONFIG_FILE).read_text())["base"]
        return load_reward_model(base, adapter_path=str(folder), device=device, dtype=dtype)
    return load_reward_model(str(folder), device=device, dtype=dtype)


def _hidden_size(model: Any) -> int:
    config = model.config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return int(text.hidden_size)


def main(
    config: TrainConfig,
    *,
    callbacks: Sequence[Any] = (),
    report: common.Report | None = None,
) -> common.RunResult:
    """Train a reward model as `config` says and save it to OUTPUT_DIR/final."""
    from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

    device, dtype = common.resolve_device(config)
    has_eval = bool(config.eval_file or config.eval_fraction)
    arguments = common.trainer_arguments(config, device=device, dtype=dtype, has_eval=has_eval)
    arguments.pop("max_length")  # TRL's; the collator truncates (never, by default)
    args = common.build_args(
        TrainingArguments,
        **arguments,
        remove_unused_columns=False,  # the model's forward takes the collated batch, not rows
    )

    train, evals = common.load_train_and_eval(config, PAIR_COLUMNS)
    if evals is None:
        train, evals = common.split_off_eval(train, config.eval_fraction, config.seed)

    policy = common.load_model(config, device=device, dtype=dtype)
    processor = policy.processor
    collator = common.VisionCollator(
        DataCollatorForVisionPreference(processor, max_length=config.max_length),
        config.max_image_pixels,
    )
    common.check_max_length(config.max_length, train, collator)
    backbone = policy.model
    lora = common.lora_config(config, common.model_family(backbone))
    if lora is not None:
        from peft import get_peft_model

        backbone = get_peft_model(backbone, lora)
    torch.manual_seed(config.seed)  # the head's initialisation
    model = RewardModel(backbone, _hidden_size(policy.model), config.reward_head).to(device)
    if dtype == "bfloat16":
        model.head.to(torch.bfloat16)

    trainer = BradleyTerryTrainer(
        model=model,
        args=args,
        data_collator=collator,
        train_dataset=train,
        eval_dataset=evals,
        callbacks=[common.SaveConfigCallback(config), *callbacks],
    )
    resume_from = common.last_checkpoint(config.output_dir) if config.resume else None
    output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    eval_metrics = trainer.evaluate() if evals is not None else {}
    final_dir = save_reward_model(model, processor, config)
    return common.RunResult(
        trainer=trainer,
        final_dir=final_dir,
        global_step=trainer.state.global_step,
        train_metrics=dict(output.metrics),
        eval_metrics=dict(eval_metrics),
    )
