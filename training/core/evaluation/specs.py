"""Reading the evaluations a training job asks for, as written in the launch form or after
`manage.py train --evaluate`: one `TASK DATA [key=value ...]` per line.

Pure parsing: whether the task, the file and the options make sense is checked by the
evaluation service (training.services.evaluations.evaluation_specs_check) before anything is queued.
"""

from __future__ import annotations

from typing import Any

from training.core.recipes.config import parse_overrides


def parse_evaluation_specs(lines: list[str] | str) -> list[dict[str, Any]]:
    """`TASK DATA [key=value ...]` per line (values read as JSON when they parse), e.g.
    `scienceqa var/shapes/scienceqa.parquet split="test" limit=200`."""
    items = lines.splitlines() if isinstance(lines, str) else lines
    specs = []
    for raw in items:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        task, _, rest = line.partition(" ")
        data, _, options = rest.strip().partition(" ")
        if not data:
            raise ValueError(f"an evaluation is 'TASK DATA [key=value ...]', not {line!r}")
        specs.append({"task": task, "data": data, **parse_overrides(options.split())})
    return specs
