"""The dataset card (README.md) written next to every export.

Pure core (no Django, and no YAML library at write time: the front matter is emitted by
the small writer below, which quotes every string that YAML could read as anything else;
the tests read it back with `yaml.safe_load`).

The front matter follows the Hugging Face card metadata: `license`, `task_categories`,
`configs` (the split -> file mapping that `load_dataset` on the folder uses) and
`dataset_info` (features in the YAML list form `datasets` writes, split sizes). The
provenance (strategy, parameters, rater selection, raters with their models and prompt
versions, sources, checksum) goes under a `preference_studio` key too, so a program can
read it without parsing the Markdown body, which says the same for people.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["dataset_card", "features_to_yaml_list", "to_yaml"]

_KINDS = {
    "dpo": ("preference pairs for DPO", ["dpo", "preference", "vision-language"]),
    "sft": ("supervised fine-tuning examples", ["sft", "vision-language"]),
    "steerlm": (
        "SteerLM attribute-conditioned fine-tuning examples",
        ["sft", "steerlm", "helpsteer", "vision-language"],
    ),
    "kto": ("unpaired preference examples for KTO", ["kto", "preference", "vision-language"]),
}

_COLUMN_NOTES = {
    "images": "the prompt's image (a list of one; empty for text-only prompts)",
    "prompt": 'the user turn: [{"type": "image"}, {"type": "text", "text": question}]',
    "chosen": "the preferred assistant turn",
    "rejected": "the dispreferred assistant turn",
    "messages": "user turn (image + question), then the assistant turn to learn",
    "prompt_id": "the prompt's id in the studio",
    "completion_id": "the completion's id in the studio",
    "chosen_scores": "HelpSteer scores (0-4) of the chosen answer, null when unrated",
    "rejected_scores": "HelpSteer scores (0-4) of the rejected answer, null when unrated",
    "scores": "HelpSteer scores (0-4) of the answer, null when unrated",
    "margin": "score difference between chosen and rejected, as the strategy measured it",
    "rater": 'whose ratings selected the row ("judge:3", "user:7", ...)',
    "reference": "the prompt's reference answer, null when it has none (online DPO checks "
    "its samples against it)",
    "label": "SteerLM attribute string (empty when the row has none); KTO: desirable or not",
    "completion": "the assistant turn, desirable or undesirable as `label` says",
}

# ---------------------------------------------------------------------------------------
# A minimal YAML writer (block style)

# Plain (unquoted) scalars only where YAML 1.1 and 1.2 both read them back as this string.
_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_./-]*$")
_RESERVED = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "nan", "inf"}
# Characters YAML does not allow raw in a double-quoted scalar (non-printables), or folds
# as line breaks (NEL, LS, PS): written as escapes.
_UNPRINTABLE = re.compile(
    "[^\x09\x0a\x0d\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"
)


def _escape(char: re.Match[str]) -> str:
    code = ord(char.group())
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _string(value: str) -> str:
    if _PLAIN.match(value) and value.lower() not in _RESERVED:
        return value
    # A JSON string is a valid YAML double-quoted scalar once non-printables are escaped.
    return _UNPRINTABLE.sub(_escape, json.dumps(value, ensure_ascii=False))


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        text = repr(value)
        # YAML 1.1 (PyYAML) needs a dot in a float: "1e-05" would read as a string.
        if "e" in text and "." not in text:
            mantissa, exponent = text.split("e")
            text = f"{mantissa}.0e{exponent}"
        return text
    return _string(str(value))


def _lines(value: Any, indent: int) -> list[str]:
    pad = " " * indent
    if isinstance(value, Mapping):
        out = []
        for key, item in value.items():
            head = f"{pad}{_string(str(key))}:"
            if isinstance(item, Mapping | list | tuple) and item:
                # A list under a key sits at the key's indent, as datasets writes it.
                out.append(head)
                out.extend(_lines(item, indent if isinstance(item, list | tuple) else indent + 2))
            else:
                out.append(f"{head} {_inline(item)}")
        return out
    if isinstance(value, list | tuple):
        out = []
        for item in value:
            if isinstance(item, Mapping | list | tuple) and item:
                nested = _lines(item, indent + 2)
                # The first line of the nested block moves up onto the dash.
                out.append(f"{pad}- {nested[0][indent + 2 :]}")
                out.extend(nested[1:])
            else:
                out.append(f"{pad}- {_inline(item)}")
        return out
    return [pad + _scalar(value)]


def _inline(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{}"
    if isinstance(value, list | tuple):
        return "[]"
    return _scalar(value)


def to_yaml(value: Mapping[str, Any]) -> str:
    """A mapping as block YAML (strings quoted where needed); ends with a newline."""
    return "\n".join(_lines(value, 0)) + "\n"


# ---------------------------------------------------------------------------------------
# Features in the card's YAML list form


def _feature_yaml(feature: Any) -> Any:
    """One `datasets` feature (JSON form) as the value of its YAML entry: the inner part of
    `{"name": ..., <this>}`, as `datasets.Features._to_yaml_list` writes it."""
    if isinstance(feature, Mapping) and "_type" in feature:
        kind = feature["_type"]
        if kind == "Value":
            return {"dtype": feature["dtype"]}
        if kind in ("Image", "Audio", "Video"):
            return {"dtype": kind.lower()}
        if kind in ("List", "LargeList", "Sequence"):
            inner = _feature_yaml(feature["feature"])
            key = {"List": "list", "LargeList": "large_list", "Sequence": "sequence"}[kind]
            if list(inner) == ["dtype"]:
                return {key: inner["dtype"]}
            if list(inner) == ["struct"]:
                return {key: inner["struct"]}
            return {key: inner}
        raise ValueError(f"feature type {kind!r} is not supported in the card")
    if isinstance(feature, Mapping):  # a struct: field name -> feature
        return {"struct": [{"name": name, **_feature_yaml(sub)} for name, sub in feature.items()]}
    raise TypeError(f"not a datasets feature: {feature!r}")


def features_to_yaml_list(features: Mapping[str, Any]) -> list[dict[str, Any]]:
    """`datasets` features (JSON form, e.g. `DPO_FEATURES`) as the card's YAML list."""
    return [{"name": name, **_feature_yaml(feature)} for name, feature in features.items()]


# ---------------------------------------------------------------------------------------
# The card


def _size_category(rows: int) -> str:
    for limit, label in (
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
        (10_000_000, "1M<n<10M"),
    ):
        if rows < limit:
            return label
    return "n>10M"


def _plain(value: Any) -> Any:
    """Parameters and sources as JSON/YAML-safe values (tuples to lists, objects to str)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else value
        return [_plain(v) for v in items]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _table(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    columns: list[str] = []
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    if not columns:
        return []
    out = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    out.extend("| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows)
    return out


def dataset_card(
    *,
    name: str,
    version: int | str,
    kind: str,
    strategy: str,
    params: Mapping[str, Any],
    rater_selection: Any,
    raters: Sequence[Mapping[str, Any]],
    counts: Mapping[str, int],
    sources: Sequence[Mapping[str, Any] | str],
    checksum: str | Mapping[str, str],
    features: Mapping[str, Any],
    licence: str = "other",
    description: str = "",
    data_files: Mapping[str, str] | None = None,
) -> str:
    """README.md text for one export: YAML front matter, then a readable body.

    `kind` is "dpo", "sft" or "steerlm"; `counts` maps split name -> rows (e.g. train,
    eval); `data_files` maps split -> file relative to the card (default
    `<split>.parquet`); `raters` are dicts such as {"rater": "judge:3", "model": ...,
    "prompt_version": ...}; `checksum` is a sha256 or a file -> sha256 mapping;
    `features` is the `datasets` JSON form (`DPO_FEATURES` / `SFT_FEATURES`).
    """
    if kind not in _KINDS:
        raise ValueError(f"unknown kind {kind!r} (expected one of {', '.join(_KINDS)})")
    files = dict(data_files or {split: f"{split}.parquet" for split in counts})
    missing = [split for split in counts if split not in files]
    if missing:
        raise ValueError(f"no data file given for split(s) {', '.join(missing)}")
    what, tags = _KINDS[kind]
    total = sum(counts.values())
    plain_sources = [_plain(s) for s in sources]
    plain_raters = [_plain(r) for r in raters]

    front: dict[str, Any] = {
        "license": licence,
        "pretty_name": f"{name} v{version}",
        "task_categories": ["image-text-to-text"],
        "tags": tags,
        "size_categories": [_size_category(total)],
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": s, "path": files[s]} for s in counts],
            }
        ],
        "dataset_info": {
            "features": features_to_yaml_list(features),
            "splits": [{"name": s, "num_examples": int(n)} for s, n in counts.items()],
        },
        "preference_studio": {
            "name": name,
            "version": version,
            "kind": kind,
            "strategy": strategy,
            "params": _plain(params),
            "rater_selection": _plain(rater_selection),
            "raters": plain_raters,
            "sources": plain_sources,
            "checksum": _plain(checksum),
        },
    }

    body = [f"# {name} (version {version})", ""]
    if description:
        body += [description.strip(), ""]
    body += [
        f"{total} {what}, built by the preference studio with the `{strategy}` strategy.",
        "",
        "## Splits",
        "",
        *_table([{"split": s, "rows": n, "file": files[s]} for s, n in counts.items()]),
        "",
        "## How it was built",
        "",
        f"- Strategy: `{strategy}`",
        "- Parameters:",
        "",
        "```json",
        json.dumps(_plain(params), indent=2, sort_keys=True),
        "```",
        "",
        f"- Rater selection: `{json.dumps(_plain(rater_selection), sort_keys=True)}`",
        "",
        "### Raters (judge models and prompt versions)",
        "",
        *(_table(plain_raters) or ["None recorded."]),
        "",
        "### Sources",
        "",
        *(
            [
                f"- {json.dumps(s, sort_keys=True) if not isinstance(s, str) else s}"
                for s in plain_sources
            ]
            or ["None recorded."]
        ),
        "",
        "## Columns",
        "",
        *[f"- `{column}`: {_COLUMN_NOTES.get(column, '')}".rstrip(": ") for column in features],
        "",
        "## Loading",
        "",
        "```python",
        "from datasets import load_dataset",
        "",
        f'ds = load_dataset("parquet", data_files={json.dumps(files)})',
        "```",
        "",
    ]
    if kind == "dpo":
        body += [
            "TRL's `DPOTrainer` takes these columns as they are (pass the model's processor as",
            "`processing_class`); set `max_length=None` or large enough never to cut image",
            "tokens (LLaVA-1.5 spends 576 tokens on one image).",
            "",
        ]
    elif kind == "kto":
        body += [
            "TRL's `KTOTrainer` takes these columns as they are: `prompt`, `completion` and",
            "`label` (true: desirable), in its unpaired layout for vision models.",
            "",
        ]
    elif kind == "steerlm":
        body += [
            "SteerLM: each assistant turn opens with its attribute label as its own text",
            "part (`helpfulness:4,correctness:4,...` and a newline), then the response, the",
            "place NeMo-Aligner gives it. At inference, prefill the assistant turn with the",
            "desired label and a newline.",
            "",
        ]
    body += ["## Checksum", ""]
    if isinstance(checksum, str):
        body.append(f"sha256: `{checksum}`")
    else:
        body += [f"- `{file}`: sha256 `{digest}`" for file, digest in checksum.items()]
    body.append("")
    return "---\n" + to_yaml(front) + "---\n\n" + "\n".join(body)
