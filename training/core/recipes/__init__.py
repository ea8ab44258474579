"""Training recipes on TRL + PEFT: `sft`, `steerlm` and `dpo`, each a `main(config)`.

Pure core: no Django. This package module imports only the configuration (standard
library), so validating a job costs nothing; `sft`, `dpo`, `ref_logps` and `common` import
torch / transformers / TRL and are imported by the runner (training/run.py) after the
config has been validated.
"""

from training.core.recipes.config import (
    DPO_LOSS_TYPES,
    LANGUAGE_MODEL_LINEAR,
    PRESETS,
    RECIPES,
    ConfigError,
    TrainConfig,
    dataset_kind_from_card,
)

__all__ = [
    "DPO_LOSS_TYPES",
    "LANGUAGE_MODEL_LINEAR",
    "PRESETS",
    "RECIPES",
    "ConfigError",
    "TrainConfig",
    "dataset_kind_from_card",
]
