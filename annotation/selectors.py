"""Reads for completions and ratings."""

from __future__ import annotations

from itertools import groupby

from annotation.models import Completion


def prompt_completions_by_checkpoint(*, prompt_id: int) -> list[tuple[object, list[Completion]]]:
    """A prompt's completions, grouped by the checkpoint that wrote them."""
    rows = (
        Completion.objects.filter(prompt_id=prompt_id)
        .select_related("checkpoint")
        .order_by("checkpoint__name", "template", "sampling_hash", "sample_index")
    )
    return [(ckpt, list(group)) for ckpt, group in groupby(rows, key=lambda c: c.checkpoint)]
