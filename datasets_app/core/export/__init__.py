"""Export core: curated rows -> parquet (DPO / SFT, as `datasets` and TRL read them),
NeMo-Aligner SteerLM JSONL, the dataset card, and the readers that take them back.

Pure core: nothing here imports Django (a test checks it in a fresh interpreter). The
service gathers rows and passes a `load_image(key) -> bytes` callable.
"""

from datasets_app.core.export.card import dataset_card, features_to_yaml_list
from datasets_app.core.export.nemo import NemoStats, write_nemo_jsonl
from datasets_app.core.export.parquet import (
    DPO_FEATURES,
    DPO_SCHEMA,
    KTO_FEATURES,
    KTO_SCHEMA,
    SFT_FEATURES,
    SFT_SCHEMA,
    ExportItem,
    WriteStats,
    atomic_output,
    write_dpo_parquet,
    write_kto_parquet,
    write_sft_parquet,
)
from datasets_app.core.export.reader import (
    ImportedExample,
    ImportedPair,
    read_dpo_parquet,
    read_sft_parquet,
)

__all__ = [
    "DPO_FEATURES",
    "DPO_SCHEMA",
    "KTO_FEATURES",
    "KTO_SCHEMA",
    "SFT_FEATURES",
    "SFT_SCHEMA",
    "ExportItem",
    "ImportedExample",
    "ImportedPair",
    "NemoStats",
    "WriteStats",
    "atomic_output",
    "dataset_card",
    "features_to_yaml_list",
    "read_dpo_parquet",
    "read_sft_parquet",
    "write_dpo_parquet",
    "write_kto_parquet",
    "write_nemo_jsonl",
    "write_sft_parquet",
]
