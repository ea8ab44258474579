"""mDPO (Wang et al. 2024, "mDPO: Conditional Preference Optimization for Multimodal Large
Language Models") on an exported DPO parquet, as a small loss on top of TRL's DPOTrainer.

DPO on images can learn to prefer an answer without looking at the image. mDPO adds a
conditional preference: the chosen answer given the image is preferred to the same answer
given a corrupted image, and an anchor keeps the chosen answer's reward above zero. With
c, r the chosen and rejected answers, c' the chosen answer scored with the image corrupted,
pi and ref the policy and reference log-probs and s the sigmoid (REFERENCE.md):

    - log s(b[(pi_c - pi_r) - (ref_c - ref_r)])      preference (DPO)
    - log s(b[(pi_c - pi_c') - (ref_c - ref_c')])    conditional preference
    - log s(b(pi_c - ref_c))                         anchor

The corrupted image is fixed per row before training (`corrupt_image`, seeded by the row),
so the reference's log-prob of c' is computed once with the other reference log-probs
(the same cache, keyed by the corruption too) and the reference stays free during training.
Corruptions: "crop" (mDPO's: a random crop keeping 1-20% of the area, resized back) and
"noise" (DDPM's forward process, 500 steps, as BDHS's noisy-image variant).

`main(config)` reads top to bottom: trainer arguments, data (+ corrupted images), model,
reference log-probs, trainer, train, save.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.core.generation.guided import noisy_image
from training.core.recipes import common
from training.core.recipes.config import MDPO_CORRUPTIONS, TrainConfig

if TYPE_CHECKING:
    import torch
    from datasets import Dataset
    from PIL import Image

CORRUPTED_COLUMN = "corrupted_images"
REF_CORRUPT_COLUMN = "ref_chosen_corrupt_logps"
CROP_SCALE = (0.01, 0.2)  # share of the area a crop keeps (mDPO's RandomResizedCrop scale)
NOISE_STEPS = 500


def corrupt_image(image: Image.Image, kind: str, seed: int) -> Image.Image:
    """`image` with most of what it shows taken away, the same for the same seed."""
    from PIL import Image as PILImage

    if kind == "noise":
        return noisy_image(image, steps=NOISE_STEPS, seed=seed)
    if kind != "crop":
        raise ValueError(f"unknown corruption {kind!r} (known: {', '.join(MDPO_CORRUPTIONS)})")
    rng = random.Random(seed)  # noqa: S311 - data augmentation, not security
    width, height = image.size
    area = rng.uniform(*CROP_SCALE) * width * height
    ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
    w = max(1, min(width, round(math.sqrt(area * ratio))))
    h = max(1, min(height, round(math.sqrt(area / ratio))))
    left, top = rng.randint(0, width - w), rng.randint(0, height - h)
    crop = image.convert("RGB").crop((left, top, left + w, top + h))
    return crop.resize((width, height), PILImage.Resampling.BICUBIC)


def add_corrupted_images(dataset: Dataset, kind: str, seed: int) -> Dataset:
    """`dataset` with CORRUPTED_COLUMN: each row's images corrupted, seeded by the row's
    index and `seed`, so that the reference pass and training see the same pixels."""

    def corrupt(row: dict[str, Any], index: int) -> dict[str, Any]:
        images = row["images"] or []
        return {
            CORRUPTED_COLUMN: [
                corrupt_image(image, kind, seed * 1_000_003 + index * 17 + n)
                for n, image in enumerate(images)
            ]
        }

    from datasets import Image as ImageFeature
    from datasets import Sequence as SequenceFeature

    features = dataset.features.copy()
    features[CORRUPTED_COLUMN] = SequenceFeature(ImageFeature())
    return dataset.map(corrupt, with_indices=True, features=features)


def with_corrupted_chosen(row: dict[str, Any]) -> dict[str, Any]:
    """A pair row whose images are the corrupted ones and whose both answers are the chosen
    one: collated, its first half is c' (TRL's collator stacks chosen, then rejected)."""
    out = {k: v for k, v in row.items() if k != CORRUPTED_COLUMN}
    out["images"] = row[CORRUPTED_COLUMN]
    out["rejected"] = row["chosen"]
    return out


def chosen_half(batch: dict[str, Any], rows: int) -> dict[str, Any]:
    """The chosen half of a collated pair batch of 2 x `rows`: the first rows, and the
    images those rows hold (images are laid out chosen first as well)."""
    grid = batch.get("image_grid_thw")  # Qwen2-VL: pixel_values are patches, grid-sized
    out = {}
    for key, value in batch.items():
        if key == "pixel_values" and grid is not None:
            half = grid.shape[0] // 2
            out[key] = value[: int(grid[:half].prod(-1).sum())]
        elif key in ("pixel_values", "image_grid_thw", "image_sizes", "pixel_attention_mask"):
            out[key] = value[: value.shape[0] // 2]
        elif hasattr(value, "shape") and value.shape[:1] == (2 * rows,):
            out[key] = value[:rows]
        else:
            out[key] = value
    return out


def mdpo_losses(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    policy_corrupt: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    ref_corrupt: torch.Tensor,
    beta: float,
) -> dict[str, torch.Tensor]:
    """Per-row terms of the mDPO loss (module docstring); `loss` is their sum."""
    import torch.nn.functional as F

    chosen_ratio = policy_chosen - ref_chosen
    preference = -F.logsigmoid(beta * (chosen_ratio - (policy_rejected - ref_rejected)))
    conditional = -F.logsigmoid(beta * (chosen_ratio - (policy_corrupt - ref_corrupt)))
    anchor = -F.logsigmoid(beta * chosen_ratio)
    return {
        "loss": preference + conditional + anchor,
        "preference": preference,
        "conditional": conditional,
        "anchor": anchor,
    }


class MdpoCollator:
    """TRL's vision pair batch (with the reference columns) plus `cond_*`: the chosen
    answers under their corrupted images."""

    def __init__(self, processor: Any, config: TrainConfig, float_columns: tuple[str, ...]):
        from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

        inner = DataCollatorForVisionPreference(processor, max_length=config.max_length)
        self.pairs = common.VisionCollator(inner, config.max_image_pixels, float_columns)
        self.corrupt = common.VisionCollator(inner, config.max_image_pixels)

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.pairs(
            [{k: v for k, v in e.items() if k != CORRUPTED_COLUMN} for e in examples]
        )
        corrupt = self.corrupt([with_corrupted_chosen(e) for e in examples])
        cond = chosen_half(corrupt, len(examples))
        batch.update({f"cond_{key}": value for key, value in cond.items()})
        return batch


def make_trainer_class() -> type:
    """MdpoTrainer, built on first use: TRL is imported only by the runner."""
    from training.core.recipes.dpo import PrecomputedRefDPOTrainer
    from training.core.recipes.ref_logps import REF_COLUMNS, sequence_logps

    class MdpoTrainer(PrecomputedRefDPOTrainer):
        """DPOTrainer whose loss is mDPO's, from precomputed reference log-probs."""

        def _set_signature_columns_if_needed(self) -> None:
            super()._set_signature_columns_if_needed()
            columns: list[str] = list(self._signature_columns or [])
            self._signature_columns = [*columns, REF_CORRUPT_COLUMN, CORRUPTED_COLUMN]  # type: ignore[assignment]

        def compute_loss(
            self,
            model: Any,
            inputs: dict[str, Any],
            return_outputs: bool = False,
            num_items_in_batch: Any = None,
        ) -> Any:
            mode = "train" if model.training else "eval"
            cond = {k.removeprefix("cond_"): v for k, v in inputs.items() if k.startswith("cond_")}
            refs = [inputs[name] for name in (*REF_COLUMNS, REF_CORRUPT_COLUMN)]
            skip = {*REF_COLUMNS, REF_CORRUPT_COLUMN}
            pairs = {k: v for k, v in inputs.items() if not k.startswith("cond_") and k not in skip}
            policy_chosen, policy_rejected = sequence_logps(model, pairs).chunk(2)
            policy_corrupt = sequence_logps(model, cond)
            ref_chosen, ref_rejected, ref_corrupt = refs
            terms = mdpo_losses(
                policy_chosen,
                policy_rejected,
                policy_corrupt,
                ref_chosen,
                ref_rejected,
                ref_corrupt,
                beta=self.beta,
            )
            metrics = self._metrics[mode]
            for name in ("preference", "conditional", "anchor"):
                metrics[f"mdpo/{name}"].append(terms[name].mean().item())
            chosen_reward = self.beta * (policy_chosen - ref_chosen).detach()
            rejected_reward = self.beta * (policy_rejected - ref_rejected).detach()
            corrupt_reward = self.beta * (policy_corrupt - ref_corrupt).detach()
            metrics["rewards/chosen"].append(chosen_reward.mean().item())
            metrics["rewards/rejected"].append(rejected_reward.mean().item())
            metrics["rewards/corrupted"].append(corrupt_reward.mean().item())
            metrics["rewards/accuracies"].append(
                (chosen_reward > rejected_reward).float().mean().item()
            )
            metrics["rewards/margins"].append((chosen_reward - rejected_reward).mean().item())
            metrics["logps/chosen"].append(policy_chosen.detach().mean().item())
            metrics["logps/rejected"].append(policy_rejected.detach().mean().item())
            metrics["logps/corrupted"].append(policy_corrupt.detach().mean().item())
            loss = terms["loss"].mean()
            return (loss, {}) if return_outputs else loss

    return MdpoTrainer


def main(
    config: TrainConfig,
    *,
    callbacks: Sequence[Any] = (),
    report: common.Report | None = None,
) -> common.RunResult:
    """Train an mDPO policy as `config` says and save it to OUTPUT_DIR/final."""
    from trl import DPOConfig

    from training.core.recipes.dpo import DPO_COLUMNS, reference_name
    from training.core.recipes.ref_logps import (
        REF_COLUMNS,
        add_ref_columns,
        load_or_compute_ref_logps,
        ref_logps_event,
    )

    report = report or (lambda _: None)
    device, dtype = common.resolve_device(config)
    has_eval = bool(config.eval_file or config.eval_fraction)
    args = common.build_args(
        DPOConfig,
        **common.trainer_arguments(config, device=device, dtype=dtype, has_eval=has_eval),
        beta=config.beta,
        precompute_ref_log_probs=False,  # refused for vision data; ours are precomputed
    )

    train, evals = common.load_train_and_eval(config, DPO_COLUMNS)
    train = add_corrupted_images(train, config.mdpo_corruption, config.seed)
    if evals is not None:
        evals = add_corrupted_images(evals, config.mdpo_corruption, config.seed + 1)

    policy = common.load_model(config, device=device, dtype=dtype)
    processor = policy.processor
    from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

    common.check_max_length(
        config.max_length,
        train,
        common.VisionCollator(DataCollatorForVisionPreference(processor), config.max_image_pixels),
    )

    # Reference log-probs: the pairs (shared with DPO on the same data and reference), and
    # the chosen answer under the corrupted image (keyed by the corruption as well).
    ref_dir = config.ref_logps_cache_dir or str(Path(config.output_dir) / "ref_logps")
    reference = reference_name(config)
    corrupted_reference = f"{reference}#mdpo:{config.mdpo_corruption}:{config.seed}"
    splits: list[tuple[str, str, Dataset]] = [("train", config.train_file, train)]
    if evals is not None:
        splits.append(("eval", str(config.eval_file), evals))
    ready = {}
    for split, path, dataset in splits:

        def reference_logps(rows: Dataset, reference_path: str, path: str = path) -> Any:
            return load_or_compute_ref_logps(
                policy.model,
                processor,
                rows,
                dataset_file=path,
                reference_path=reference_path,
                cache_dir=ref_dir,
                batch_size=config.ref_batch_size or config.per_device_eval_batch_size,
                max_image_pixels=config.max_image_pixels,
            )

        ref = reference_logps(dataset.remove_columns([CORRUPTED_COLUMN]), reference)
        corrupt = reference_logps(
            dataset.map(with_corrupted_chosen, remove_columns=[CORRUPTED_COLUMN]),
            corrupted_reference,
        )
        report(ref_logps_event(split, ref))
        report(ref_logps_event(split, corrupt))
        dataset = add_ref_columns(dataset, ref)
        ready[split] = dataset.add_column(REF_CORRUPT_COLUMN, corrupt.chosen.tolist())
    train, evals = ready["train"], ready.get("eval")
    if evals is None:
        train, evals = common.split_off_eval(train, config.eval_fraction, config.seed)

    trainer = make_trainer_class()(
        model=policy.model,
        args=args,
        data_collator=MdpoCollator(processor, config, (*REF_COLUMNS, REF_CORRUPT_COLUMN)),
        train_dataset=train,
        eval_dataset=evals,
        processing_class=processor,
        peft_config=common.lora_config(config, common.model_family(policy.model)),
        callbacks=[common.SaveConfigCallback(config), *callbacks],
    )
    return common.train_and_save(trainer, config, processor)
