from django.core.management.base import BaseCommand, CommandError

from datasets_app.core.imports import FORMATS
from datasets_app.services import imports


class Command(BaseCommand):
    help = "Import prompts (parquet, JSONL, image folder, ScienceQA or POPE) all-or-nothing."

    def add_arguments(self, parser):
        parser.add_argument("file", help="a .parquet/.jsonl/.csv file or an image folder")
        parser.add_argument("--source", required=True, help="name of the source to import into")
        parser.add_argument("--format", default="prompts", choices=[*FORMATS, "dpo", "sft"])
        parser.add_argument(
            "--skip-bad", action="store_true", help="import the valid rows, report the rest"
        )

    def handle(self, *args, **opts):
        if opts["format"] in ("dpo", "sft"):
            return self._answers(opts)
        try:
            outcome = imports.prompts_import(
                path=opts["file"],
                source_name=opts["source"],
                fmt=opts["format"],
                skip_bad=opts["skip_bad"],
            )
        except imports.ImportRejected as exc:
            for error in exc.parsed.errors:
                self.stderr.write(f"  {error}")
            raise CommandError(
                exc.explain("pass --skip-bad to import only the valid rows")
            ) from None
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        for error in outcome.rejected:
            self.stderr.write(f"  skipped row {error['row']}: {error['error']}")
        self.stdout.write(
            self.style.SUCCESS(
                f"{outcome.source.name}: {outcome.rows_total} rows read, {outcome.created} "
                f"imported, {outcome.duplicates} already present, {len(outcome.rejected)} rejected"
            )
        )
        if outcome.report_name:
            self.stdout.write(f"report: {outcome.report_name}")

    def _answers(self, opts):
        from datasets_app.services.exports import preference_import

        try:
            counts = preference_import(
                path=opts["file"], source_name=opts["source"], fmt=opts["format"]
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            self.style.SUCCESS(
                f"{opts['source']}: {counts['created']} {opts['format']} rows imported, "
                f"{counts['duplicates']} already present"
            )
        )
