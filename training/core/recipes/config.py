"""The training job's configuration: one documented dataclass, the seed presets, validation.

Pure and light: only the standard library (and PyYAML, for the dataset card) is imported,
so that a bad config fails in well under a second, before torch or a model is loaded.
A job is one JSON object; `TrainConfig.from_dict(json.load(f))` reads it, `to_dict()`
writes it back (the runner stores it next to every checkpoint and in `final/`).
"""

from __future__ import annotations

import json
import math
import os
import re
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from training.core.families import DECODER_LINEAR

__all__ = [
    "DPO_LOSS_TYPES",
    "LANGUAGE_MODEL_LINEAR",
    "NUMERIC_RANGES",
    "PRESETS",
    "RECIPES",
    "ConfigError",
    "TrainConfig",
    "dataset_kind_from_card",
    "last_checkpoint",
    "parse_overrides",
]

# The recipes, and the export kind (the dataset card's `preference_studio.kind`) each trains on.
RECIPES = {
    "sft": "sft",
    "steerlm": "steerlm",
    "dpo": "dpo",
    "kto": "kto",
    "mdpo": "dpo",
    "reward": "dpo",  # a Bradley-Terry reward model on the pairs
    "grpo": "sft",  # the prompts and their reference answers (the verifiable reward)
    # Online / mixed DPO: the pairs are the offline half, their prompts are asked online.
    "online_dpo": "dpo",
}
ONLINE_RANKERS = ("verifiable", "reward:PATH", "judge:SPEC")
TRACKERS = ("tensorboard", "mlflow")  # what `report_to` may name
DPO_LOSS_RECIPES = ("dpo", "online_dpo")  # the recipes that train with TRL's DPO loss mix
# The reward model's heads (recipes/reward.py), here so that a config is checked without torch.
REWARD_HEADS = ("likelihood", "last_token")
# TRL 1.16's GRPO losses (trl/trainer/grpo_config.py, `loss_type`).
GRPO_LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo")
# mDPO's image corruptions (recipes/mdpo.py), kept here so that a config is checked without torch.
MDPO_CORRUPTIONS = ("crop", "noise")

# TRL 1.16's DPO losses, as listed in trl/trainer/dpo_config.py (the `loss_type` help) and
# handled in DPOTrainer._compute_loss. TRL itself only rejects an unknown name inside the
# first training step, after the model is loaded and the data prepared; we check up front.
# tests/test_recipes.py checks that every name still appears in the installed TRL's help.
DPO_LOSS_TYPES = (
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sft",
    "sigmoid_norm",
)

# Every linear layer of a LLaMA-family decoder (LLaVA-1.5's Vicuna, Mistral, Qwen2): each
# family's default LoRA targets (training/core/families.py), adapted *inside the language model
# only*: PEFT's "all-linear" would also adapt the vision tower and the projector.
LANGUAGE_MODEL_LINEAR = DECODER_LINEAR

# Hyperparameters of the seed projects (REFERENCE.md, "Seed hyperparameters"). A preset fills
# the fields it names; keys given next to it in the JSON override it. Left out on purpose:
# seed 001's DPO max length 300, which would cut LLaVA-1.5's 576 image tokens (max_length
# stays None, i.e. no truncation), and ZeRO-3 (a launcher concern, not a recipe one).
PRESETS: dict[str, dict[str, Any]] = {
    "seed003": {  # LLaVA-1.5-7b: LoRA on all linear layers, 2 epochs, 90/10 split
        "finetune": "lora",
        "lora_r": 64,
        "lora_alpha": 128,
        "lora_dropout": 0.1,
        "learning_rate": 1e-5,
        "num_train_epochs": 2.0,
        "eval_fraction": 0.1,
    },
    "seed001_dpo": {  # LLaVA-1.5-13b DPO
        "finetune": "lora",
        "lora_r": 128,
        "lora_alpha": 256,
        "beta": 0.1,
        "learning_rate": 5e-5,
        "gradient_accumulation_steps": 4,
        "per_device_train_batch_size": 8,
        "lr_scheduler_type": "cosine",
        "warmup_ratio": 0.003,
    },
    "seed001_sft": {  # LLaVA-1.5-13b SFT (max length 2048 leaves room for the image tokens)
        "learning_rate": 4e-4,
        "per_device_train_batch_size": 16,
        "max_length": 2048,
    },
    # Mixed Preference Optimisation (InternVL's MPO): DPO's preference loss, BCO's quality
    # loss on each answer and SFT on the chosen one, weighted 0.8 / 0.2 / 1 (REFERENCE.md).
    "mpo": {"loss_type": ["sigmoid", "bco_pair", "sft"], "loss_weights": [0.8, 0.2, 1.0]},
}

# Fields a resumed run may change: they steer how long and how visibly it runs, not what is
# learnt (a job stopped at max_steps=N/2 is resumed with max_steps=N).
RUN_CONTROL_FIELDS = frozenset(
    {
        "resume",
        "max_steps",
        "num_train_epochs",
        "logging_steps",
        "eval_steps",
        "save_steps",
        "save_total_limit",
        "heartbeat_s",
        "merge_adapter",
        "device",
        "torch_threads",
        "dataloader_num_workers",
    }
)

# A hub id is "name" or "owner/name"; anything else must be a local folder.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass(frozen=True)
class Range:
    """The values a numeric field may take: low..high, each end included or not.

    `unset` is the one value outside the range that means "not set" (max_steps=-1, as TRL
    spells it); a field typed `X | None` may always be None.
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low itself is excluded
    high_open: bool = False
    unset: int | None = None

    def allows(self, value: float) -> bool:
        if value == self.unset:
            return True
        # NaN and infinity pass every comparison one way or the other: refuse them first.
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            text = (
                f"in {'(' if self.low_open else '['}{_number(self.low)}, "
                f"{_number(self.high)}{')' if self.high_open else ']'}"
            )
        elif self.low == 0:
            text = "positive" if self.low_open else "non-negative"
        elif self.low is not None:
            text = f"{'greater than' if self.low_open else 'at least'} {_number(self.low)}"
        else:
            text = "a finite number"
        return text + (f" (or {self.unset}: not set)" if self.unset is not None else "")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


_POSITIVE = Range(low=0, low_open=True)
_NON_NEGATIVE = Range(low=0)
_AT_LEAST_1 = Range(low=1)
_FRACTION = Range(low=0, high=1, high_open=True)

# Every int and float field of TrainConfig, and what it may be. A field typed `X | None`
# may also be None; a list field (loss_weights) applies its range to every item. A test
# checks that no numeric field is missing from this table.
NUMERIC_RANGES: dict[str, Range] = {
    "eval_fraction": _FRACTION,
    "lora_r": _AT_LEAST_1,
    "lora_alpha": _POSITIVE,
    "lora_dropout": _FRACTION,
    "learning_rate": _POSITIVE,
    "num_train_epochs": _POSITIVE,
    "max_steps": Range(low=1, unset=-1),  # > 0 overrides num_train_epochs
    "per_device_train_batch_size": _AT_LEAST_1,
    "per_device_eval_batch_size": _AT_LEAST_1,
    "gradient_accumulation_steps": _AT_LEAST_1,
    "warmup_ratio": _FRACTION,
    "weight_decay": _NON_NEGATIVE,
    "max_grad_norm": _NON_NEGATIVE,  # 0: no clipping
    "seed": Range(low=0, high=2**32 - 1),  # numpy's seed range
    "max_length": _AT_LEAST_1,
    "max_image_pixels": _AT_LEAST_1,
    "beta": _POSITIVE,
    "loss_weights": _NON_NEGATIVE,
    "desirable_weight": _POSITIVE,
    "num_generations": Range(low=2),  # a group of one has no advantage
    "max_completion_length": _AT_LEAST_1,
    "generation_temperature": _POSITIVE,
    "format_reward_weight": _NON_NEGATIVE,
    "grpo_beta": _NON_NEGATIVE,
    "mixed_lambda": Range(low=0, high=1),
    "undesirable_weight": _POSITIVE,
    # robust: a flip probability; exo_pair additionally needs > 0 (checked with the DPO rules)
    "label_smoothing": Range(low=0, high=0.5, high_open=True),
    "ref_batch_size": _AT_LEAST_1,
    "logging_steps": _AT_LEAST_1,
    "eval_steps": _AT_LEAST_1,
    "save_steps": _NON_NEGATIVE,  # 0: no intermediate checkpoints
    "save_total_limit": _AT_LEAST_1,
    "heartbeat_s": _POSITIVE,
    "torch_threads": _AT_LEAST_1,
    "dataloader_num_workers": _NON_NEGATIVE,
}


class ConfigError(ValueError):
    """The job's configuration is unusable; the message lists every problem found."""


@dataclass
class TrainConfig:
    """One training job: what to train, on which data, how, and where the outputs go.

    Paths may be relative (to the working directory); `resolved()` makes the local ones
    absolute, which the runner does before anything is written.
    """

    # --- What to train -------------------------------------------------------------------
    recipe: str  # a RECIPES key: "sft", "steerlm", "dpo", "kto", "mdpo", "reward" or "grpo"
    model_path: str  # a full checkpoint folder (or hub id): base of the adapter, and DPO reference
    train_file: str  # an exported parquet (datasets_app/core/export/parquet.py layout)
    output_dir: str  # checkpoints, metrics.jsonl, final/
    # The export's kind ("sft", "steerlm", "dpo"); None: read from the README.md dataset card
    # next to train_file.
    dataset_kind: str | None = None
    eval_file: str | None = None
    # Without eval_file: hold out this fraction of train_file for evaluation (0: no eval).
    eval_fraction: float = 0.0
    preset: str | None = None  # the PRESETS entry applied by from_dict, kept for the record
    # A LoRA adapter (an earlier run's final/) merged into model_path before training: DPO on
    # an SFT adapter trains, and takes as its reference, the SFT policy. The new adapter then
    # only applies on top of that merge, so such a LoRA run must write final/merged.
    base_adapter: str | None = None

    # --- Which weights train -------------------------------------------------------------
    finetune: str = "lora"  # "lora" (an adapter on the language model) or "full"
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    # Module names adapted inside the language model only (never the vision side); None
    # takes the model family's own (families.py: the decoder's attention and MLP layers).
    lora_target_modules: list[str] | None = None
    train_projector: bool = False  # also train the vision-to-text projector (fully)
    freeze_vision_tower: bool = True

    # --- Optimisation (passed to TRL's SFTConfig / DPOConfig) -----------------------------
    learning_rate: float = 2e-4
    num_train_epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides num_train_epochs
    per_device_train_batch_size: int = 8
    per_device_eval_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    lr_scheduler_type: str = "linear"
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    gradient_checkpointing: bool = False  # saves GPU memory on 7B+; slower, and useless on CPU
    seed: int = 42

    # --- Data ----------------------------------------------------------------------------
    # None: never truncate. A number is checked against the longest rows (image tokens
    # included) before training, so that image tokens are never cut.
    max_length: int | None = None
    max_image_pixels: int | None = None  # shrink larger images (aspect kept) to this budget

    # --- DPO ----------------------------------------------------------------------------
    beta: float = 0.1
    loss_type: list[str] = field(default_factory=lambda: ["sigmoid"])
    loss_weights: list[float] | None = None  # one per loss_type when several are combined
    label_smoothing: float = 0.0  # robust: flip probability in [0, 0.5); exo_pair: epsilon > 0
    # Run the reference once over the data and store its log-probs (cached by data checksum
    # and reference path) instead of a second forward pass at every step.
    precompute_ref_logps: bool = True
    ref_batch_size: int | None = None  # default: per_device_eval_batch_size
    ref_logps_cache_dir: str | None = None  # default: OUTPUT_DIR/ref_logps

    # --- KTO (beta above is KTO's beta too) -----------------------------------------------
    # Weights of the desirable and undesirable losses; KTO's paper keeps
    # desirable_weight * n_desirable / (undesirable_weight * n_undesirable) in [1, 4/3].
    desirable_weight: float = 1.0
    undesirable_weight: float = 1.0

    # --- mDPO (beta above is mDPO's beta too; the reference log-probs are always precomputed)
    # How the image of the conditional preference is corrupted: "crop" (mDPO's: a random
    # crop keeping 1-20% of the area) or "noise" (500 forward-diffusion steps).
    mdpo_corruption: str = "crop"

    # --- GRPO ----------------------------------------------------------------------------
    num_generations: int = 4  # answers sampled per prompt, the group of the advantage
    # The KL coefficient to the reference (TRL's GRPO `beta`); 0 loads no reference model.
    grpo_beta: float = 0.0
    max_completion_length: int = 16
    generation_temperature: float = 1.0
    grpo_loss_type: str = "dapo"
    # Weight of the format reward (a readable yes/no, letter or short answer) beside the
    # answer reward's 1 (training/core/verifiable.py).
    format_reward_weight: float = 0.1

    # --- Reward model: its head, "likelihood" or "last_token" (recipes/reward.py) ----------
    reward_head: str = "likelihood"

    # --- Online and mixed DPO (beta is DPO's; num_generations, max_completion_length,
    # generation_temperature and format_reward_weight are GRPO's, read the same way) -----
    # The probability that a row trains on its stored pair rather than on fresh samples
    # (seed 002's Equation 4): 0 is online DPO, 1 offline DPO.
    mixed_lambda: float = 0.0
    # Who ranks the samples: "verifiable" (the row's reference answer), "reward:PATH" (a
    # reward model folder; the site writes a registered checkpoint's path there) or
    # "judge:SPEC" (judge:local:PATH, judge:openai:MODEL, judge:gemini:MODEL).
    online_ranker: str = "verifiable"

    # --- Running and outputs -------------------------------------------------------------
    logging_steps: int = 10
    eval_steps: int | None = None  # None: evaluate at each epoch end (and once at the end)
    save_steps: int = 500  # 0: no intermediate checkpoints
    save_total_limit: int | None = 2
    resume: bool = False  # continue from the last OUTPUT_DIR/checkpoint-* (same config)
    merge_adapter: bool = False  # also write final/merged: the base with the adapter merged in
    heartbeat_s: float = 30.0
    # Where the metrics also go, through the trainers' `report_to`: "tensorboard" (event
    # files in OUTPUT_DIR/tensorboard) and "mlflow" (added by itself when the runner's
    # environment sets MLFLOW_TRACKING_URI). metrics.jsonl is written whatever this says.
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])
    device: str | None = None  # None: cuda when available, else cpu
    dtype: str | None = None  # "float32" or "bfloat16"; None: bfloat16 on cuda, else float32
    torch_threads: int | None = None  # CPU threads; 1 is fastest for tiny models on a busy box
    dataloader_num_workers: int = 0  # Celery prefork workers cannot start loader processes

    def _online_errors(self) -> list[str]:
        ranker = self.online_ranker
        if ranker == "verifiable":
            return []
        if ranker.startswith("judge:"):
            provider, _, model = ranker.removeprefix("judge:").partition(":")
            if provider not in ("local", "openai", "gemini") or not model.strip():
                return [
                    f"online_ranker {ranker!r}: a judge is judge:local:PATH, "
                    "judge:openai:MODEL or judge:gemini:MODEL"
                ]
            return []
        if not ranker.startswith("reward:") or not ranker.removeprefix("reward:").strip():
            return [f"online_ranker must be one of {', '.join(ONLINE_RANKERS)}, not {ranker!r}"]
        folder = Path(ranker.removeprefix("reward:"))
        if not (folder / "reward_head.safetensors").is_file():
            return [f"online_ranker {ranker!r}: {folder} is not a reward model (no reward head)"]
        return []

    # ----------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a JSON object: a `preset` fills its fields first, explicit keys win."""
        if not isinstance(data, dict):
            raise ConfigError(f"a config is a JSON object, not {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config keys: {', '.join(unknown)}")
        values: dict[str, Any] = {}
        preset = data.get("preset")
        if preset is not None:
            if preset not in PRESETS:
                raise ConfigError(f"unknown preset {preset!r} (known: {', '.join(PRESETS)})")
            values.update(PRESETS[preset])
        values.update(data)
        missing = [
            f.name
            for f in fields(cls)
            if f.default is MISSING and f.default_factory is MISSING and f.name not in values
        ]
        if missing:
            raise ConfigError(f"missing config keys: {', '.join(missing)}")
        if isinstance(values.get("loss_type"), str):  # TRL accepts a bare name too
            values["loss_type"] = [values["loss_type"]]
        config = cls(**values)
        errors = config._type_errors()
        if errors:
            raise ConfigError("; ".join(errors))
        return config

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def resolved(self) -> TrainConfig:
        """A copy with local paths made absolute (adapters record their base's path, and a
        relative one breaks as soon as the working directory changes), and dataset_kind
        read from the dataset card when not given, so that the saved config records it."""

        def absolute(path: str | None) -> str | None:
            return None if path is None else str(Path(path).expanduser().resolve())

        model_path = self.model_path
        if not _looks_like_hub_id(model_path) or Path(model_path).exists():
            model_path = str(absolute(model_path))
        return replace(
            self,
            model_path=model_path,
            train_file=str(absolute(self.train_file)),
            eval_file=absolute(self.eval_file),
            base_adapter=absolute(self.base_adapter),
            output_dir=str(absolute(self.output_dir)),
            ref_logps_cache_dir=absolute(self.ref_logps_cache_dir),
            dataset_kind=self.dataset_kind or dataset_kind_from_card(self.train_file),
        )

    def training_identity(self) -> dict[str, Any]:
        """The fields that define what is learnt: a resumed run must match them."""
        return {k: v for k, v in self.to_dict().items() if k not in RUN_CONTROL_FIELDS}

    def validate(self, *, data_files: bool = True) -> None:
        """Raise ConfigError listing every problem; touches only the file system.

        data_files=False skips the checks of train_file and eval_file, for a job whose data
        is exported when it starts (dataset_kind must then be given).
        """
        errors = self._type_errors()
        if errors:  # the range checks below assume the types are right
            raise ConfigError("; ".join(errors))

        if self.recipe not in RECIPES:
            errors.append(f"unknown recipe {self.recipe!r} (known: {', '.join(RECIPES)})")
        if self.preset is not None and self.preset not in PRESETS:
            errors.append(f"unknown preset {self.preset!r}")
        errors += self._range_errors()
        if self.finetune not in ("lora", "full"):
            errors.append(f"finetune must be 'lora' or 'full', not {self.finetune!r}")
        if self.finetune == "lora":
            if self.lora_target_modules is not None and not self.lora_target_modules:
                errors.append("lora_target_modules is empty (leave it out for the family's own)")
            if self.base_adapter is not None and not self.merge_adapter:
                errors.append(
                    "a LoRA run on top of base_adapter must set merge_adapter=true: the new "
                    "adapter applies to the merged model only, not to model_path"
                )
        elif self.merge_adapter:
            errors.append(
                "merge_adapter applies to LoRA runs only (finetune='full' has no adapter)"
            )

        if self.dtype not in (None, "float32", "bfloat16"):
            # float16 weights under AdamW need loss scaling and fp32 master weights; not offered.
            errors.append(f"dtype must be 'float32' or 'bfloat16' (or null), not {self.dtype!r}")
        if self.device not in (None, "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            errors.append(f"device must be 'cpu', 'cuda' or 'cuda:N', not {self.device!r}")

        if self.recipe in DPO_LOSS_RECIPES:
            unknown = [name for name in self.loss_type if name not in DPO_LOSS_TYPES]
            if unknown or not self.loss_type:
                errors.append(
                    f"unknown DPO loss_type {unknown or self.loss_type} "
                    f"(TRL accepts: {', '.join(DPO_LOSS_TYPES)})"
                )
            if self.loss_weights is not None and len(self.loss_weights) != len(self.loss_type):
                errors.append("loss_weights needs one weight per loss_type")
            # TRL checks this in DPOTrainer.__init__, i.e. after the model is loaded.
            if "exo_pair" in self.loss_type and self.label_smoothing <= 0:
                errors.append("loss_type exo_pair needs label_smoothing > 0 (EXO suggests 1e-3)")
        if self.recipe not in DPO_LOSS_RECIPES and (
            self.loss_type != ["sigmoid"] or self.loss_weights
        ):
            # Any other recipe has its own loss: a DPO loss mix there would not be trained.
            errors.append(
                f"loss_type and loss_weights apply to dpo and online_dpo only, not {self.recipe}"
            )
        if self.recipe == "mdpo":
            errors += _one_of("mdpo_corruption", self.mdpo_corruption, MDPO_CORRUPTIONS)
            if not self.precompute_ref_logps:
                errors.append("mdpo always precomputes its reference log-probs")
        if self.recipe == "grpo":
            errors += _one_of("grpo_loss_type", self.grpo_loss_type, GRPO_LOSS_TYPES)
            batch = self.per_device_train_batch_size * self.gradient_accumulation_steps
            if self.num_generations >= 2 and batch % self.num_generations:
                # TRL checks it in GRPOConfig, after the data is prepared.
                errors.append(
                    f"per_device_train_batch_size x gradient_accumulation_steps ({batch}) must "
                    f"be a multiple of num_generations ({self.num_generations})"
                )
        if self.recipe == "reward":
            errors += _one_of("reward_head", self.reward_head, REWARD_HEADS)
        elif self.reward_head != "likelihood":
            errors.append(f"reward_head applies to reward only, not {self.recipe}")
        if self.recipe == "online_dpo":
            errors += self._online_errors()
        elif self.mixed_lambda or self.online_ranker != "verifiable":
            errors.append(
                f"mixed_lambda and online_ranker apply to online_dpo only, not {self.recipe}"
            )
        unknown_trackers = [t for t in self.report_to if t not in TRACKERS]
        if unknown_trackers:
            errors.append(
                f"report_to names {', '.join(map(str, unknown_trackers))}; "
                f"it takes {', '.join(TRACKERS)} (or nothing)"
            )
        if self.recipe == "kto" and self.per_device_train_batch_size < 2:
            # TRL checks it in KTOTrainer.__init__: the KL term pairs rows within a batch.
            errors.append("KTO needs per_device_train_batch_size >= 2 (its KL term pairs rows)")

        errors += self._file_errors(data_files=data_files)
        if self.recipe in RECIPES and not any("train_file" in e for e in errors):
            kind = self.dataset_kind or (
                dataset_kind_from_card(self.train_file) if data_files else None
            )
            expected = RECIPES[self.recipe]
            if kind is None:
                errors.append(
                    "dataset_kind is not given and no dataset card (README.md with "
                    "preference_studio.kind) sits next to train_file"
                )
            elif kind != expected:
                errors.append(
                    f"recipe {self.recipe!r} trains on a {expected!r} dataset, but "
                    f"{self.train_file} is a {kind!r} dataset"
                )
        if errors:
            raise ConfigError("; ".join(errors))

    # ----------------------------------------------------------------------------------
    def _file_errors(self, *, data_files: bool = True) -> list[str]:
        errors = []
        for name in ("train_file", "eval_file") if data_files else ():
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                errors.append(f"{name} {path} does not exist")
        if self.eval_file is not None and self.eval_fraction:
            errors.append("give eval_file or eval_fraction, not both")
        if self.base_adapter is not None:
            adapter = Path(self.base_adapter).expanduser()
            if not (adapter / "adapter_config.json").is_file():
                errors.append(f"base_adapter {self.base_adapter} is not a LoRA adapter folder")
        model = Path(self.model_path).expanduser()
        if model.exists() or not _looks_like_hub_id(self.model_path):
            if not model.is_dir():
                errors.append(f"model_path {self.model_path} does not exist")
            elif not (model / "config.json").is_file():
                if (model / "adapter_config.json").is_file():
                    errors.append(
                        f"model_path {self.model_path} is a LoRA adapter: train on a full "
                        "checkpoint (a run with merge_adapter=true writes one to final/merged)"
                    )
                else:
                    errors.append(f"model_path {self.model_path} has no config.json")
        out = Path(self.output_dir)
        if out.exists() and not out.is_dir():
            errors.append(f"output_dir {self.output_dir} is a file")
        return errors

    def _range_errors(self) -> list[str]:
        errors = []
        for name, allowed in NUMERIC_RANGES.items():
            value = getattr(self, name)
            if value is None:  # the types allow None only where a field is optional
                continue
            items = value if isinstance(value, list) else [value]
            if not all(allowed.allows(item) for item in items):
                what = "every item of " + name if isinstance(value, list) else name
                errors.append(f"{what} must be {allowed.describe()}, not {value!r}")
        return errors

    def _type_errors(self) -> list[str]:
        hints = typing.get_type_hints(type(self))
        return [
            f"{f.name} must be {_type_name(hints[f.name])}, not {getattr(self, f.name)!r}"
            for f in fields(self)
            if not _matches(getattr(self, f.name), hints[f.name])
        ]


def _one_of(name: str, value: str, allowed: tuple[str, ...]) -> list[str]:
    if value in allowed:
        return []
    return [f"{name} must be one of {', '.join(allowed)}, not {value!r}"]


def _matches(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_matches(v, item) for v in value)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:  # JSON writes 2.0 as 2
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")


def _looks_like_hub_id(name: str) -> bool:
    return (
        not os.path.isabs(name)
        and not name.startswith((".", "~"))
        and _HUB_ID.match(name) is not None
    )


def parse_overrides(pairs: list[str] | str) -> dict[str, Any]:
    """`key=value` items (or lines): values are read as JSON when they parse
    (numbers, true/false/null, lists), else kept as text. Lines that are empty or start with
    `#` are skipped. The launch form, `manage.py train --set` and evaluation specs all read
    their overrides through this one parser, before anything reaches a service."""
    items = pairs.splitlines() if isinstance(pairs, str) else pairs
    overrides: dict[str, Any] = {}
    for raw in items:
        item = raw.strip()
        if not item or item.startswith("#"):
            continue
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"an override is key=value, not {item!r}")
        try:
            overrides[key] = json.loads(value.strip())
        except ValueError:
            overrides[key] = value.strip()
    return overrides


def dataset_kind_from_card(train_file: str | os.PathLike[str]) -> str | None:
    """The export kind recorded in the dataset card (README.md) next to `train_file`."""
    card = Path(train_file).parent / "README.md"
    try:
        text = card.read_text(encoding="utf-8")
    except OSError:
        return None
    if not text.startswith("---"):
        return None
    front, _, _ = text[3:].partition("\n---")
    import yaml  # a dependency of datasets and huggingface_hub

    try:
        meta = yaml.safe_load(front) or {}
    except yaml.YAMLError:
        return None
    studio = meta.get("preference_studio") if isinstance(meta, dict) else None
    kind = studio.get("kind") if isinstance(studio, dict) else None
    return kind if isinstance(kind, str) else None


def last_checkpoint(output_dir: str | os.PathLike[str]) -> Path | None:
    """The checkpoint-N folder with the largest N that Trainer finished writing (its
    trainer_state.json is written last, and must parse: a process killed while writing it
    leaves an empty or cut file, and resuming from that folder fails), or None."""
    found = []
    for folder in Path(output_dir).glob("checkpoint-*"):
        suffix = folder.name.removeprefix("checkpoint-")
        if suffix.isdigit() and _complete_state(folder / "trainer_state.json"):
            found.append((int(suffix), folder))
    return max(found)[1] if found else None


def _complete_state(path: Path) -> bool:
    try:
        return isinstance(json.loads(path.read_text(encoding="utf-8")), dict)
    except (OSError, ValueError):
        return False
