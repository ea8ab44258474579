"""DPO on an exported preference parquet (prompt / chosen / rejected / images), with TRL.

`main(config)` reads top to bottom: trainer arguments, data, model, reference
log-probabilities, trainer, train, save.

Precomputed reference log-probs in TRL 1.16 (trl/trainer/dpo_trainer.py):
- DPOTrainer.__init__ refuses `precompute_ref_log_probs=True` for vision data, so the
  DPOConfig flag stays off and `ref_logps.py` computes them (the checkpoint before training).
- DPOTrainer._compute_loss takes `inputs["ref_chosen_logps"]` / `inputs["ref_rejected_logps"]`
  instead of a reference forward whenever `self.precompute_ref_logps` is true; the attribute
  is copied from the config in __init__, so `PrecomputedRefDPOTrainer` sets it afterwards.
- The columns must reach the batch: TRL's text collator passes them through, but its vision
  collator (DataCollatorForVisionPreference) does not, and the vision signature columns
  (`_set_signature_columns_if_needed`) would drop them first. `VisionCollator(float_columns=
  REF_COLUMNS)` and the signature override below carry them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trl import DPOConfig, DPOTrainer
from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

from training.core.recipes import common
from training.core.recipes.config import TrainConfig
from training.core.recipes.ref_logps import (
    REF_COLUMNS,
    add_ref_columns,
    load_or_compute_ref_logps,
    ref_logps_event,
)

DPO_COLUMNS = ("images", "prompt", "chosen", "rejected")


class PrecomputedRefDPOTrainer(DPOTrainer):
    """DPOTrainer that reads the reference log-probs from the REF_COLUMNS of its datasets."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Read by _compute_loss; TRL sets it from args.precompute_ref_log_probs, which it
        # refuses for vision data.
        self.precompute_ref_logps = True
        # Full fine-tuning: TRL loaded a frozen copy of the model as the reference; the stored
        # log-probs make it dead weight. (With LoRA there is no copy: ref_model is None.)
        self.ref_model = None

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        # Keep the reference columns when Trainer drops the columns the model does not take.
        columns: list[str] = list(self._signature_columns or [])
        self._signature_columns = [*columns, *REF_COLUMNS]  # type: ignore[assignment]


def main(
    config: TrainConfig,
    *,
    callbacks: Sequence[Any] = (),
    report: common.Report | None = None,
) -> common.RunResult:
    """Train a DPO policy as `config` says and save it to OUTPUT_DIR/final."""
    report = report or (lambda _: None)
    device, dtype = common.resolve_device(config)
    has_eval = bool(config.eval_file or config.eval_fraction)
    # Built first: DPOConfig checks its own arguments before a model is loaded.
    args = common.build_args(
        DPOConfig,
        **common.trainer_arguments(config, device=device, dtype=dtype, has_eval=has_eval),
        beta=config.beta,
        loss_type=list(config.loss_type),
        loss_weights=config.loss_weights,
        label_smoothing=config.label_smoothing,
        precompute_ref_log_probs=False,  # refused for vision data; see the module docstring
    )

    train, evals = common.load_train_and_eval(config, DPO_COLUMNS)

    policy = common.load_model(config, device=device, dtype=dtype)
    processor = policy.processor
    common.check_max_length(
        config.max_length,
        train,
        common.VisionCollator(DataCollatorForVisionPreference(processor), config.max_image_pixels),
    )

    if config.precompute_ref_logps:
        # The freshly loaded checkpoint is the reference: no adapter exists yet.
        ref_dir = config.ref_logps_cache_dir or str(Path(config.output_dir) / "ref_logps")
        files = [("train", config.train_file)]
        if evals is not None:
            files.append(("eval", str(config.eval_file)))
        for split, path in files:
            dataset = train if split == "train" else evals
            assert dataset is not None
            ref = load_or_compute_ref_logps(
                policy.model,
                processor,
                dataset,
                dataset_file=path,
                reference_path=reference_name(config),
                cache_dir=ref_dir,
                batch_size=config.ref_batch_size or config.per_device_eval_batch_size,
                max_image_pixels=config.max_image_pixels,
            )
            report(ref_logps_event(split, ref))
            if split == "train":
                train = add_ref_columns(train, ref)
            else:
                evals = add_ref_columns(dataset, ref)
    if evals is None:  # split after the columns are added, so each row keeps its own
        train, evals = common.split_off_eval(train, config.eval_fraction, config.seed)

    trainer_class = PrecomputedRefDPOTrainer if config.precompute_ref_logps else DPOTrainer
    trainer = trainer_class(
        model=policy.model,
        args=args,
        data_collator=common.VisionCollator(
            DataCollatorForVisionPreference(processor, max_length=config.max_length),
            config.max_image_pixels,
            float_columns=REF_COLUMNS if config.precompute_ref_logps else (),
        ),
        train_dataset=train,
        eval_dataset=evals,
        processing_class=processor,
        peft_config=common.lora_config(config, common.model_family(policy.model)),
        callbacks=[common.SaveConfigCallback(config), *callbacks],
    )
    return common.train_and_save(trainer, config, processor)


def reference_name(config: TrainConfig) -> str:
    """What the reference is, for the log-prob cache key: the checkpoint and any adapter
    merged into it (two runs on one base with different adapters have different refs)."""
    if config.base_adapter is None:
        return config.model_path
    return f"{config.model_path}+{config.base_adapter}"
