"""Reference log-probabilities for DPO, computed once and stored.

TRL's own `precompute_ref_log_probs=True` raises for vision datasets (dpo_trainer.py, in
DPOTrainer.__init__), so we run the reference ourselves: the checkpoint before training (a
PeftModel's base with its adapters disabled, or the plain base model) over every pair, in
batches, through the same collator TRL trains with. The result is one summed log-prob per
completion, stored as an .npz keyed by a hash of (dataset file sha256, reference checkpoint
path, image pixel budget): a second run on the same data and reference reads it back.

The key trusts that a checkpoint path is never rewritten in place (every training run writes
its own folder). The pixel budget is part of the key because it changes the pixels, hence
the log-probs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from training.core.recipes.common import VisionCollator

if TYPE_CHECKING:
    from datasets import Dataset

__all__ = [
    "REF_COLUMNS",
    "RefLogps",
    "add_ref_columns",
    "compute_ref_logps",
    "file_sha256",
    "load_or_compute_ref_logps",
    "ref_logps_event",
    "ref_logps_key",
    "sequence_logps",
]

# The column names TRL's DPOTrainer reads when `precompute_ref_logps` is on (dpo_trainer.py,
# DPOTrainer._compute_loss: inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]).
REF_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")


@dataclass
class RefLogps:
    chosen: np.ndarray  # float32, one per row, summed over the completion tokens
    rejected: np.ndarray
    path: Path
    cached: bool  # read back from an earlier run
    seconds: float  # time spent computing (0 when cached)


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def ref_logps_key(dataset_sha256: str, reference_path: str, max_image_pixels: int | None) -> str:
    payload = json.dumps([dataset_sha256, reference_path, max_image_pixels])
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def sequence_logps(model: Any, batch: dict[str, Any]) -> torch.Tensor:
    """Summed log-probs of the completion tokens of each row of a collated batch.

    Logits are kept only from the first completion column on (`logits_to_keep`): the
    prompt, 576 image tokens for LLaVA-1.5, needs none, and full logits cost rows x length x
    vocabulary floats.
    """
    completion_mask = batch["completion_mask"]
    input_ids = batch["input_ids"]
    length = input_ids.size(1)
    first = int(completion_mask.any(dim=0).nonzero()[0])  # first column holding a completion
    keep = length - first + 1  # the logit at first - 1 predicts the token at first
    inputs = {k: v for k, v in batch.items() if k != "completion_mask"}
    logits = model(**inputs, use_cache=False, logits_to_keep=keep).logits.float()
    targets = input_ids[:, length - keep + 1 :]
    mask = completion_mask[:, length - keep + 1 :]
    token_logps = logits[:, :-1].log_softmax(dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return (token_logps * mask).sum(dim=1)


def compute_ref_logps(
    model: Any,
    processor: Any,
    dataset: Dataset,
    *,
    batch_size: int,
    max_image_pixels: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(chosen, rejected) summed log-probs of every row under `model` as the reference.

    A PeftModel runs with its adapters disabled, i.e. as the base it was made from. Batches
    go through TRL's DataCollatorForVisionPreference, so tokens and pixels are exactly those
    the trainer sees (its flush-left layout gives every row the same positions whatever it
    is batched with).
    """
    from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

    collator = VisionCollator(DataCollatorForVisionPreference(processor), max_image_pixels)
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    adapters_off = getattr(model, "disable_adapter", contextlib.nullcontext)
    was_training = model.training
    model.eval()
    chosen, rejected = [], []
    try:
        with torch.no_grad(), adapters_off():
            for start in range(0, len(dataset), batch_size):
                rows = list(dataset.select(range(start, min(start + batch_size, len(dataset)))))
                batch = {k: v.to(device) for k, v in collator(rows).items()}
                if "pixel_values" in batch:
                    batch["pixel_values"] = batch["pixel_values"].to(dtype)
                logps = sequence_logps(model, batch).cpu()
                c, r = logps.chunk(2)  # the collator stacks all chosen, then all rejected
                chosen.append(c)
                rejected.append(r)
    finally:
        model.train(was_training)
    return torch.cat(chosen).numpy(), torch.cat(rejected).numpy()


def load_or_compute_ref_logps(
    model: Any,
    processor: Any,
    dataset: Dataset,
    *,
    dataset_file: str,
    reference_path: str,
    cache_dir: str | os.PathLike[str],
    batch_size: int,
    max_image_pixels: int | None = None,
) -> RefLogps:
    """The stored log-probs for (dataset_file, reference_path), computed on a miss."""
    key = ref_logps_key(file_sha256(dataset_file), reference_path, max_image_pixels)
    path = Path(cache_dir) / f"ref-logps-{key}.npz"
    if path.is_file():
        with np.load(path) as stored:
            if len(stored["chosen"]) == len(dataset):
                return RefLogps(stored["chosen"], stored["rejected"], path, True, 0.0)
    started = time.perf_counter()
    chosen, rejected = compute_ref_logps(
        model, processor, dataset, batch_size=batch_size, max_image_pixels=max_image_pixels
    )
    seconds = time.perf_counter() - started
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written aside and renamed: a job killed mid-write never leaves a truncated cache entry.
    tmp = path.with_name(f"{path.stem}.tmp-{os.getpid()}.npz")
    meta = {"dataset_file": str(dataset_file), "reference": reference_path, "rows": len(chosen)}
    np.savez(tmp, chosen=chosen, rejected=rejected, meta=np.array(json.dumps(meta)))
    os.replace(tmp, path)
    return RefLogps(chosen, rejected, path, False, seconds)


def ref_logps_event(split: str, ref: RefLogps) -> dict[str, Any]:
    """The runner's ref_logps line for one reference pass over a split."""
    from training.core.protocol import Event, record

    return record(
        Event.REF_LOGPS,
        timed=False,
        split=split,
        rows=len(ref.chosen),
        cached=ref.cached,
        seconds=round(ref.seconds, 3),
        path=str(ref.path),
    )


def add_ref_columns(dataset: Dataset, ref: RefLogps) -> Dataset:
    """`dataset` with the REF_COLUMNS TRL reads; they travel with their rows through
    shuffling and splitting."""
    dataset = dataset.add_column(REF_COLUMNS[0], ref.chosen.astype(np.float32).tolist())
    return dataset.add_column(REF_COLUMNS[1], ref.rejected.astype(np.float32).tolist())
