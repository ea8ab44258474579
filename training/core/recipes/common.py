"""What every recipe shares: the model with its adapter, the data, the collator wrapper, the
trainer arguments, the callbacks that feed metrics.jsonl, and the final save.

torch, peft, datasets and PIL are imported inside the functions that use them; only
transformers (for the TrainerCallback base class) is imported here.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback

from training.core import families
from training.core.families import Family
from training.core.protocol import (
    CONFIG_FILE,
    FINAL_DIR,
    MERGED_DIR,
    TENSORBOARD_DIR,
    Event,
    record,
)
from training.core.recipes.config import ConfigError, TrainConfig, last_checkpoint

if TYPE_CHECKING:
    from datasets import Dataset
    from PIL import Image

    from training.core.modeling import LoadedPolicy

Report = Callable[[dict[str, Any]], None]


@dataclass
class RunResult:
    trainer: Any  # the TRL trainer, model and state included
    final_dir: Path
    global_step: int
    train_metrics: dict[str, float] = field(default_factory=dict)
    eval_metrics: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------
# Device, model and adapter


def resolve_device(config: TrainConfig) -> tuple[str, str]:
    """(device, dtype name): cuda and bfloat16 when there is a GPU, else cpu and float32."""
    import torch

    if config.torch_threads is not None:
        # On a small CPU shared with other work, one thread avoids OpenMP spin-waiting: the
        # tiny model's step was measured 20x slower with 2 threads on a 2-core box in use.
        torch.set_num_threads(config.torch_threads)
    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = config.dtype or ("bfloat16" if device.startswith("cuda") else "float32")
    return device, dtype


def load_model(config: TrainConfig, *, device: str, dtype: str) -> LoadedPolicy:
    """The checkpoint through the project's one loader, frozen where the config says.

    With LoRA, PEFT freezes every base weight and the adapter lives in the language model
    only, so freezing matters for full fine-tuning: the vision tower (and the projector,
    unless train_projector) keep their weights.
    """
    from training.core.modeling import load_policy

    policy = load_policy(
        config.model_path, adapter_path=config.base_adapter, device=device, dtype=dtype
    )
    if config.base_adapter is not None:
        policy.model = policy.model.merge_and_unload()
    family = model_family(policy.model)
    if config.finetune == "full":
        for name, param in policy.model.named_parameters():
            part = family.part(name)
            if part == families.VISION:
                param.requires_grad_(not config.freeze_vision_tower)
            elif part == families.PROJECTOR:
                param.requires_grad_(config.train_projector)
    return policy


def model_family(model: Any) -> Family:
    """The family whose layout `model` has, checked: each of its three parts must be there,
    or freezing and LoRA targeting would silently miss the vision tower."""
    names = [name for name, _ in model.named_parameters()]
    model_type = str(getattr(model.config, "model_type", ""))
    try:
        family = families.family_from_modules(model_type, names)
    except families.UnknownLayout as exc:
        raise ConfigError(str(exc)) from exc
    found = {family.part(name) for name in names}
    parts = (families.VISION, families.PROJECTOR, families.LANGUAGE)
    missing = [part for part in parts if part not in found]
    if missing:
        raise ConfigError(
            f"{model_type} has no {', '.join(missing)} module where the {family.name} layout "
            f"keeps it ({family.vision}, {family.projector}, {family.language})"
        )
    return family


def lora_config(config: TrainConfig, family: Family) -> Any:
    """The PEFT LoraConfig for the run, or None for full fine-tuning: the family's decoder
    projections (or `lora_target_modules`) inside its language model only."""
    if config.finetune != "lora":
        return None
    from peft import LoraConfig

    # modules_to_save trains a full copy of the module next to the adapter and saves it with
    # the adapter, which is how a LoRA run trains the projector (or the vision tower).
    modules_to_save = []
    if not config.freeze_vision_tower:
        modules_to_save.append(family.vision)
    # A projector inside the vision tower (Qwen's merger) is saved with the tower already.
    inside_tower = family.projector.startswith(f"{family.vision}.")
    if config.train_projector and not (modules_to_save and inside_tower):
        modules_to_save.append(family.projector)
    names = config.lora_target_modules or list(family.lora_targets)
    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=families.language_model_targets(family, names),
        modules_to_save=modules_to_save or None,
    )


def trainer_arguments(
    config: TrainConfig, *, device: str, dtype: str, has_eval: bool
) -> dict[str, Any]:
    """Keyword arguments shared by TRL's SFTConfig and DPOConfig."""
    eval_strategy = ("steps" if config.eval_steps else "epoch") if has_eval else "no"
    return {
        "output_dir": config.output_dir,
        "learning_rate": config.learning_rate,
        "num_train_epochs": config.num_train_epochs,
        "max_steps": config.max_steps,
        "per_device_train_batch_size": config.per_device_train_batch_size,
        "per_device_eval_batch_size": config.per_device_eval_batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "lr_scheduler_type": config.lr_scheduler_type,
        # transformers 5 folded warmup_ratio into warmup_steps: a float below 1 is a ratio.
        "warmup_steps": config.warmup_ratio,
        "weight_decay": config.weight_decay,
        "max_grad_norm": config.max_grad_norm,
        "seed": config.seed,
        # transformers 5.24's name; its old alias, gradient_checkpointing, is what TRL
        # defaults to True, and setting the new name overrides it without a warning.
        "activation_checkpointing": config.gradient_checkpointing,
        # TRL turns bf16 on by default; CPU runs (and fp32 checkpoints) must say no.
        "bf16": dtype == "bfloat16",
        "use_cpu": device == "cpu",
        "max_length": config.max_length,
        "logging_steps": config.logging_steps,
        "eval_strategy": eval_strategy,
        "eval_steps": config.eval_steps,
        "save_strategy": "steps" if config.save_steps else "no",
        "save_steps": config.save_steps or 500,
        "save_total_limit": config.save_total_limit,
        "dataloader_num_workers": config.dataloader_num_workers,
        # metrics.jsonl is the record the site reads; trackers are for people (tracking.py).
        "report_to": trackers(config),
        "run_name": Path(config.output_dir).name,
        "disable_tqdm": True,  # progress goes to metrics.jsonl, not to the job's stderr
    }


def trackers(config: TrainConfig) -> list[str]:
    """The run's trackers: `report_to`, plus MLflow when MLFLOW_TRACKING_URI is set. Each
    is checked here, in the runner, where it would be imported: a missing library is a
    config error that names what to install, not a crash after the model is loaded."""
    import importlib.util

    chosen = list(dict.fromkeys(config.report_to))
    if os.environ.get("MLFLOW_TRACKING_URI") and "mlflow" not in chosen:
        chosen.append("mlflow")
    missing = {
        "tensorboard": "tensorboard (in the project's dependencies)",
        "mlflow": "mlflow (pip install 'preference-studio[tracking]')",
    }
    absent = [missing[t] for t in chosen if importlib.util.find_spec(t) is None]
    if absent:
        raise ConfigError(f"report_to needs {', '.join(absent)}; or leave it out of report_to")
    if "tensorboard" in chosen:
        # transformers 5 reads the folder from the environment; the runner is the run's own
        # process, so setting it here points this run's events into its folder.
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(Path(config.output_dir) / TENSORBOARD_DIR)
    if "mlflow" in chosen:
        os.environ.setdefault("MLFLOW_EXPERIMENT_NAME", "preference-studio")
    return chosen


def build_args(args_class: Callable[..., Any], **kwargs: Any) -> Any:
    """TRL's SFTConfig / DPOConfig; what they refuse (an unknown scheduler, ...) is a config
    error, found before a model is loaded."""
    try:
        return args_class(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{args_class.__name__}: {exc}") from exc


# ---------------------------------------------------------------------------------------
# Data


def load_parquet(path: str, cache_dir: Path) -> Dataset:
    """An exported parquet as a `datasets.Dataset` (images decode to PIL on access)."""
    import datasets

    return datasets.load_dataset("parquet", data_files=str(path), cache_dir=str(cache_dir))["train"]


def require_columns(dataset: Dataset, columns: Sequence[str], path: str) -> None:
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        raise ConfigError(
            f"{path} lacks the columns {missing} (it has {dataset.column_names}): "
            "is it the right kind of export?"
        )


def load_train_and_eval(
    config: TrainConfig, columns: Sequence[str]
) -> tuple[Dataset, Dataset | None]:
    """The run's train file and its eval file (None without one), each checked for the
    recipe's columns; the eval fraction is split off by the caller, which may add columns
    first (DPO's reference log-probs)."""
    cache = Path(config.output_dir) / ".datasets_cache"
    train = load_parquet(config.train_file, cache)
    require_columns(train, columns, config.train_file)
    if not config.eval_file:
        return train, None
    evals = load_parquet(config.eval_file, cache)
    require_columns(evals, columns, config.eval_file)
    return train, evals


def split_off_eval(dataset: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset | None]:
    if not fraction:
        return dataset, None
    if round(len(dataset) * fraction) < 1:
        raise ConfigError(f"eval_fraction {fraction} of {len(dataset)} rows leaves no eval rows")
    parts = dataset.train_test_split(test_size=fraction, seed=seed, shuffle=True)
    return parts["train"], parts["test"]


def fit_pixel_budget(image: Image.Image, max_pixels: int | None) -> Image.Image:
    """`image` shrunk (aspect ratio kept) so that width x height <= max_pixels."""
    width, height = image.size
    if max_pixels is None or width * height <= max_pixels:
        return image
    scale = math.sqrt(max_pixels / (width * height))
    size = (max(1, int(width * scale)), max(1, int(height * scale)))
    from PIL import Image

    return image.convert("RGB").resize(size, Image.Resampling.BICUBIC)


@dataclass
class VisionCollator:
    """A TRL vision collator with two additions: images are shrunk to the pixel budget
    first, and the named float columns (precomputed reference log-probs) come back as
    tensors, which TRL's vision collators would drop."""

    inner: Callable[[list[dict[str, Any]]], dict[str, Any]]
    max_image_pixels: int | None = None
    float_columns: tuple[str, ...] = ()

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        examples = [dict(example) for example in examples]  # the collators mutate rows
        extras = {
            name: torch.tensor([example.pop(name) for example in examples], dtype=torch.float32)
            for name in self.float_columns
            if name in examples[0]
        }
        for example in examples:
            if example.get("images"):
                example["images"] = [
                    fit_pixel_budget(image, self.max_image_pixels) for image in example["images"]
                ]
        batch = self.inner(examples)
        batch.update(extras)
        return batch


def _text_chars(value: Any) -> int:
    """Characters of text in a row's prompt / completion / messages column."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(_text_chars(item) for item in value)
    if isinstance(value, dict):
        return _text_chars(value.get("content")) + len(value.get("text") or "")
    return 0


def check_max_length(
    max_length: int | None,
    dataset: Dataset,
    collator: Callable[[list[dict[str, Any]]], dict[str, Any]],
    *,
    sample: int = 16,
) -> None:
    """Refuse a max_length that would truncate the longest rows.

    TRL truncates the tail of each sequence to max_length; when a prompt alone is longer,
    image tokens are cut and the forward fails at once, or a completion is cut silently.
    The rows with the most text are collated without truncation (`collator` must not
    truncate) and measured with their image tokens. For LLaVA-1.5 every image costs the
    same (576 tokens), so the longest texts are the longest rows.
    """
    if max_length is None:
        return
    text_columns = [
        c for c in ("prompt", "chosen", "rejected", "messages") if c in dataset.column_names
    ]
    chars = [
        sum(_text_chars(row[c]) for c in text_columns)
        for row in dataset.select_columns(text_columns)
    ]
    longest = sorted(range(len(chars)), key=chars.__getitem__, reverse=True)[:sample]
    needed = 0
    for start in range(0, len(longest), 4):
        batch = collator([dataset[i] for i in longest[start : start + 4]])
        needed = max(needed, int(batch["attention_mask"].sum(dim=1).max()))
    if needed > max_length:
        raise ConfigError(
            f"max_length {max_length} would truncate: the longest rows need {needed} tokens "
            f"(image tokens included); set max_length to at least {needed}, or null"
        )


# ---------------------------------------------------------------------------------------
# Callbacks


def _number(value: Any) -> float | int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value if math.isfinite(value) else None


class MetricsCallback(TrainerCallback):
    """Turns each Trainer log into one JSON record (step, epoch, loss, learning_rate,
    tokens_per_s, the DPO rewards, eval_* metrics) and tracks the step for heartbeats."""

    def __init__(self, write: Report, stop_requested: Callable[[], bool] = lambda: False) -> None:
        self._write = write
        self._stop_requested = stop_requested
        self.global_step = 0
        self._tokens_at: tuple[float, float] | None = None  # (time, num_tokens) at last log

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.global_step = state.global_step
        # max_steps is known only now (epochs x batches); the supervisor's ETA needs it.
        self._write(record(Event.TRAIN_BEGIN, step=state.global_step, max_steps=state.max_steps))
        self._tokens_at = (time.monotonic(), 0.0)  # TRL's token count restarts with train()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.global_step = state.global_step
        # A stop signal whose exception some library code caught still ends the run here.
        if self._stop_requested():
            control.should_training_stop = True

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        logs = logs or {}
        line = record(Event.METRICS, step=state.global_step, epoch=state.epoch)
        line.update({key: _number(value) for key, value in logs.items() if key not in line})
        # TRL logs the cumulative count of tokens (attention mask, image tokens included).
        tokens = logs.get("num_tokens")
        if isinstance(tokens, int | float) and self._tokens_at is not None:
            now = time.monotonic()
            then, before = self._tokens_at
            if tokens > before and now > then:
                line["tokens_per_s"] = (tokens - before) / (now - then)
            self._tokens_at = (now, float(tokens))
        self._write(line)


class SaveConfigCallback(TrainerCallback):
    """Checkpoints carry their config: a resumed or inspected checkpoint says what it is."""

    def __init__(self, config: TrainConfig) -> None:
        self._json = json.dumps(config.to_dict(), indent=2)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir():
            (folder / CONFIG_FILE).write_text(self._json)


# ---------------------------------------------------------------------------------------
# Running and saving


def train_and_save(trainer: Any, config: TrainConfig, processor: Any) -> RunResult:
    """Train (from the last checkpoint when resuming), evaluate once more if the last step
    was not evaluated, and write OUTPUT_DIR/final."""
    resume_from = last_checkpoint(config.output_dir) if config.resume else None
    output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    step = trainer.state.global_step
    history = trainer.state.log_history
    eval_metrics = {k: v for h in history if "eval_loss" in h for k, v in h.items()}
    if trainer.eval_dataset is not None and not any(
        "eval_loss" in h and h.get("step") == step for h in history
    ):
        eval_metrics = trainer.evaluate()
    final_dir = save_final(trainer, processor, config)
    return RunResult(
        trainer=trainer,
        final_dir=final_dir,
        global_step=step,
        train_metrics=dict(output.metrics),
        eval_metrics=dict(eval_metrics),
    )


def save_final(trainer: Any, processor: Any, config: TrainConfig) -> Path:
    """OUTPUT_DIR/final: the adapter (or the full model), the processor, the config; with
    merge_adapter also final/merged, a full checkpoint `load_policy` reads like any other."""
    final = Path(config.output_dir) / FINAL_DIR
    trainer.save_model(str(final))  # a PeftModel saves only its adapter (+ modules_to_save)
    processor.save_pretrained(str(final))
    (final / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2))
    if config.merge_adapter:
        merged_dir = final / MERGED_DIR
        merged = trainer.model.merge_and_unload()
        merged.save_pretrained(str(merged_dir))
        processor.save_pretrained(str(merged_dir))
    return final
