"""The five HelpSteer attributes are defined once, in the judges' pure core, and every other
module imports that tuple (a second copy could drift in order or spelling)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APPS = ("annotation", "common", "config", "datasets_app", "training", "workers")


def test_attributes_are_assigned_in_exactly_one_module():
    definers = []
    for folder in APPS:
        for path in (ROOT / folder).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in tree.body:
                targets = node.targets if isinstance(node, ast.Assign) else []
                if isinstance(node, ast.AnnAssign):
                    targets = [node.target]
                if any(isinstance(t, ast.Name) and t.id == "ATTRIBUTES" for t in targets):
                    definers.append(path.relative_to(ROOT).as_posix())
    assert definers == ["annotation/core/judges/base.py"]


def test_every_module_shares_the_same_tuple():
    from annotation.core.judges.base import ATTRIBUTES
    from datasets_app.core.curation.types import ATTRIBUTES as curation
    from training.core.evaluation.metrics import ATTRIBUTES as evaluation

    assert curation is ATTRIBUTES and evaluation is ATTRIBUTES
