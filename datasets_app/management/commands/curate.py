import json

from django.core.management.base import BaseCommand, CommandError

from annotation.services.judging import judge_config_from_spec
from config.commands import add_source_argument, source_selection
from datasets_app.core.curation import STRATEGIES
from datasets_app.services import versions


def _value(text: str):
    """--param values are JSON when they parse (2, 0.5, ["a","b"], true), else text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _pairs(items: list[str], what: str) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CommandError(f"{what} takes key=value, not {item!r}")
        out[key.strip()] = _value(value)
    return out


class Command(BaseCommand):
    help = "Build a new immutable dataset version from ratings with a named strategy."

    def add_arguments(self, parser):
        parser.add_argument("--strategy", required=True, choices=sorted(STRATEGIES))
        parser.add_argument("--name", required=True, help="dataset name (versions count up)")
        add_source_argument(parser)
        parser.add_argument("--split", default="")
        parser.add_argument(
            "--include-heldout",
            action="store_true",
            help="curate test and validation prompts too, as training rows (recorded in the "
            "version's parameters); without it they are left out",
        )
        parser.add_argument("--param", action="append", default=[], help="key=value")
        parser.add_argument("--filter", action="append", default=[], help="key=value")
        parser.add_argument("--raters", default="", help="comma-separated rater keys")
        parser.add_argument("--kinds", default="judge,user,resolution,import")
        parser.add_argument("--combine", default="mean", choices=["mean", "precedence"])
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument(
            "--answer-judge", help="judge spec whose own answers judge_answer_sft trains on"
        )
        parser.add_argument(
            "--rewrite-judge",
            help="judge spec that rewrites answers (scienceqa_reformatted: long ones; "
            "corrupted: into a plausible hallucination)",
        )

    def handle(self, *args, **o):
        selection = {"split": o["split"], **source_selection(o["source"])}
        params = _pairs(o["param"], "--param")
        if o["include_heldout"]:
            params["include_heldout"] = True
        try:
            answer = o["answer_judge"] and judge_config_from_spec(o["answer_judge"])
            rewrite = o["rewrite_judge"] and judge_config_from_spec(o["rewrite_judge"])
            version = versions.dataset_version_build(
                name=o["name"],
                strategy=o["strategy"],
                params=params,
                filters=_pairs(o["filter"], "--filter"),
                rater_selection={
                    "raters": [r for r in o["raters"].split(",") if r],
                    "kinds": [k for k in o["kinds"].split(",") if k],
                    "combine": o["combine"],
                },
                selection=selection,
                seed=o["seed"],
                answer_judge_id=answer.pk if answer else None,
                rewrite_judge_id=rewrite.pk if rewrite else None,
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        stats = version.stats
        self.stdout.write(
            self.style.SUCCESS(
                f"{version}: {version.row_count} {version.kind} rows {stats['splits']}, "
                f"checksum {version.checksum[:12]}"
            )
        )
        for reason, count in stats.get("dropped", {}).items():
            self.stdout.write(f"  dropped {count}: {reason}")
