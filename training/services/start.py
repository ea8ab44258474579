"""The instruction-tuned start: `tiny-llava (shapes SFT)`, built once and cached.

Seed 001 starts from an SFT checkpoint; seed 000 builds that instruction data. In miniature:
a random tiny LLaVA (with image tokens kept on the text-embedding scale) is fully fine-tuned
by the project's own SFT recipe on an instruction set made with the project's own curation
(`reference_sft`: seed 000's short ScienceQA target, yes/no, count, colour and "Describe the
image" rows) whose yes/no answers carry a planted prior (`shapes.Prior`): the start can see
colours but says "yes" to the partner of a colour it sees. That is the flaw the loop's
preference data has to fix.

The build goes through the same services as a user's (import, curation, training job), and
is cached under START_CACHE_DIR (default CHECKPOINT_ROOT/start), in a folder named by a
checksum of the instruction set's bytes and every setting: a second run, or a fresh
database, only registers the folder.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings

from datasets_app.core.shapes import INSTRUCT, Prior, make_instruct
from datasets_app.services import versions
from datasets_app.services.imports import prompts_import
from training.core.tiny_models import build_tiny_llava, build_tiny_vlm
from training.models import Checkpoint
from training.services import checkpoints, trainings
from workers.models import Job

START_NAME = "tiny-llava (shapes SFT)"
RANDOM_NAME = "tiny-llava (random, normalised image tokens)"
# The start of another tiny family (tiny_models.TINY_FAMILIES) is named after it.
FAMILY_NAMES = {"llava": "tiny-llava", "qwen2_5_vl": "tiny-qwen2.5-vl"}
DONE_FILE = "start.json"
# Bumped when what the build does changes in a way the settings below do not show.
BUILD_VERSION = 1

# Measured (issue 14's table): full fine-tune of every part, lr 1e-3 with warm-up and linear
# decay, batch 32. 2,000 steps reach 0.99-1.0 on colour existence without the prior.
START_TRAINING = {
    "finetune": "full",
    "freeze_vision_tower": False,
    "train_projector": True,
    "learning_rate": 1e-3,
    "lr_scheduler_type": "linear",
    "warmup_ratio": 0.05,
    "per_device_train_batch_size": 32,
    "max_steps": 1600,
    "logging_steps": 50,
    "save_steps": 0,
    "seed": 0,
}


@dataclass(frozen=True)
class StartRecipe:
    """Everything the start depends on; its checksum names the cache folder."""

    images: int = 6000
    seed: int = 0
    family: str = "llava"
    prior: Prior = field(default_factory=Prior)
    training: dict[str, Any] = field(default_factory=lambda: dict(START_TRAINING))
    torch_threads: int = 2  # run control, not part of the checksum

    def settings(self) -> dict[str, Any]:
        values = {
            "build_version": BUILD_VERSION,
            "images": self.images,
            "seed": self.seed,
            "prior": asdict(self.prior),
            "world": asdict(INSTRUCT),
            "training": self.training,
        }
        if self.family != "llava":  # the LLaVA start's checksum predates families
            values["family"] = self.family
        return values

    @property
    def name(self) -> str:
        if self.family == "llava":
            return START_NAME
        return f"{FAMILY_NAMES.get(self.family, self.family)} (shapes SFT)"


@dataclass(frozen=True)
class StartBuilt:
    checkpoint: Checkpoint
    folder: Path
    cached: bool
    seconds: float
    record: dict[str, Any]

    @property
    def detail(self) -> str:
        how = "cached" if self.cached else f"built in {self.seconds:.0f} s"
        return f"{self.checkpoint.name} ({how}) at {self.folder}"


class StartError(RuntimeError):
    """The start could not be built; the message says which step and why."""


def start_checkpoint(
    *, recipe: StartRecipe | None = None, log: Callable[[str], None] = lambda line: None
) -> StartBuilt:
    """The start checkpoint, built on the first call and registered from its cache after."""
    recipe = recipe or StartRecipe()
    started = time.monotonic()
    root = start_cache_dir()
    staging = root / ".staging"
    staging.mkdir(parents=True, exist_ok=True)
    # The data is made first: the checksum covers its bytes, not just the settings.
    data = staging / f"instruct-{recipe.seed}-{recipe.images}.parquet"
    counts = make_instruct(data, n=recipe.images, seed=recipe.seed, prior=recipe.prior)
    checksum = _checksum(recipe, data)
    folder = root / checksum[:16]
    done = folder / DONE_FILE
    if done.is_file():
        record = json.loads(done.read_text())
        checkpoint = _register(folder, recipe, record)
        return StartBuilt(checkpoint, folder, True, time.monotonic() - started, record)

    log(f"building the start {recipe.name} into {folder} (once; later runs use the cache)")
    random_dir = folder / "random"
    if recipe.family == "llava":
        build_tiny_llava(random_dir, seed=recipe.seed, normalise_image_tokens=True)
        random_name = RANDOM_NAME
    else:
        build_tiny_vlm(random_dir, family=recipe.family, seed=recipe.seed)
        random_name = f"{FAMILY_NAMES.get(recipe.family, recipe.family)} (random)"
    base = checkpoints.checkpoint_register_base(
        name=f"{random_name} {checksum[:8]}",
        model_path=checkpoints.checkpoint_stored_path(random_dir),
        notes="Random weights; the start is fine-tuned from it.",
    )
    imported = prompts_import(
        path=data, source_name=f"shapes-instruct-{checksum[:8]}", fmt="prompts"
    )
    version = versions.dataset_version_build(
        name=f"shapes-instruct-{checksum[:8]}",
        strategy="reference_sft",
        selection={"source_id": imported.source.pk},
        filters={"eval_fraction": 0.0},
        seed=recipe.seed,
    )
    training = trainings.training_launch(
        recipe="sft",
        dataset_version=version,
        base_checkpoint=base,
        overrides={**recipe.training, "torch_threads": recipe.torch_threads},
        name=f"start-{checksum[:8]}",
        enqueue=False,
    )
    trainings.training_run(job_id=training.job_id, poll_s=0.5)
    training.job.refresh_from_db()
    trained = trainings.training_checkpoint(training)
    if training.job.status != Job.Status.SUCCEEDED or trained is None:
        raise StartError(f"training the start failed: {training.job.error}")
    model_dir = folder / "model"
    shutil.copytree(checkpoints.checkpoint_location(trained.model_path), model_dir)
    record = {
        "checksum": checksum,
        "settings": recipe.settings(),
        "instruct": counts,
        "rows": version.row_count,
        "training_job_id": training.pk,
        "seconds": round(time.monotonic() - started, 1),
    }
    done.write_text(json.dumps(record, indent=2, sort_keys=True))
    checkpoint = _register(folder, recipe, record)
    return StartBuilt(checkpoint, folder, False, record["seconds"], record)


def start_cache_dir() -> Path:
    configured = settings.START_CACHE_DIR
    return Path(configured) if configured else Path(settings.CHECKPOINT_ROOT) / "start"


def _checksum(recipe: StartRecipe, data: Path) -> str:
    digest = hashlib.sha256(json.dumps(recipe.settings(), sort_keys=True).encode())
    with data.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _register(folder: Path, recipe: StartRecipe, record: dict[str, Any]) -> Checkpoint:
    prior = recipe.prior
    notes = (
        f"Full SFT of {FAMILY_NAMES.get(recipe.family, recipe.family)} on {recipe.images} "
        "instruction rows (reference_sft), "
        f"with a planted prior: {prior.cooccurrence:.0%} of the questions about an absent "
        f"colour whose partner is present answered yes, {prior.disagreement:.0%} of yes/no "
        f"answers flipped. Checksum {record['checksum'][:16]}."
    )
    path = checkpoints.checkpoint_stored_path(folder / "model")
    existing = Checkpoint.objects.filter(name=recipe.name).first()
    if existing is not None and existing.model_path != path:
        # Another recipe's start held the name: it keeps its row under a dated name.
        existing.name = f"{recipe.name} {existing.pk}"
        existing.save(update_fields=["name"])
    return checkpoints.checkpoint_register_base(name=recipe.name, model_path=path, notes=notes)
