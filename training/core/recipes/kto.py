"""KTO (Ethayarajh et al. 2024) on an exported KTO parquet (images / prompt / completion /
label), with TRL's KTOTrainer, which takes vision data in TRL 1.16
(DataCollatorForVisionUnpairedPreference).

`main(config)` reads top to bottom: trainer arguments, data, model, trainer, train, save.

TRL's own checks, made here before a model loads (config.py): KTO estimates its KL term
from each example's neighbours in the batch, so batches must be sequential and hold at
least two examples. TRL refuses precomputed reference log-probs for vision data; the
reference runs live (a frozen copy for full fine-tuning; the adapter disabled with LoRA).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from trl import KTOConfig, KTOTrainer
from trl.trainer.kto_trainer import DataCollatorForVisionUnpairedPreference

from training.core.recipes import common
from training.core.recipes.config import TrainConfig

KTO_COLUMNS = ("images", "prompt", "completion", "label")


def main(
    config: TrainConfig,
    *,
    callbacks: Sequence[Any] = (),
    report: common.Report | None = None,
) -> common.RunResult:
    """Train a KTO policy as `config` says and save it to OUTPUT_DIR/final."""
    device, dtype = common.resolve_device(config)
    has_eval = bool(config.eval_file or config.eval_fraction)
    args = common.build_args(
        KTOConfig,
        **common.trainer_arguments(config, device=device, dtype=dtype, has_eval=has_eval),
        beta=config.beta,
        desirable_weight=config.desirable_weight,
        undesirable_weight=config.undesirable_weight,
        precompute_ref_log_probs=False,  # refused for vision data (TRL)
        train_sampling_strategy="sequential",  # the KL term pairs each row with its neighbour
    )

    train, evals = common.load_train_and_eval(config, KTO_COLUMNS)
    if evals is None:
        train, evals = common.split_off_eval(train, config.eval_fraction, config.seed)

    policy = common.load_model(config, device=device, dtype=dtype)
    processor = policy.processor
    common.check_max_length(
        config.max_length,
        train,
        common.VisionCollator(
            DataCollatorForVisionUnpairedPreference(processor, calculate_kl=False),
            config.max_image_pixels,
        ),
    )
    trainer = KTOTrainer(
        model=policy.model,
        args=args,
        data_collator=common.VisionCollator(
            DataCollatorForVisionUnpairedPreference(processor, max_length=config.max_length),
            config.max_image_pixels,
        ),
        train_dataset=train,
        eval_dataset=evals,
        processing_class=processor,
        peft_config=common.lora_config(config, common.model_family(policy.model)),
        callbacks=[common.SaveConfigCallback(config), *callbacks],
    )
    return common.train_and_save(trainer, config, processor)
