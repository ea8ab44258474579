from django.core.management.base import BaseCommand, CommandError

from datasets_app.services import exports


class Command(BaseCommand):
    help = "Export a dataset version (NAME or NAME@VERSION) as parquet + dataset card."

    def add_arguments(self, parser):
        parser.add_argument("dataset", help="NAME (latest version) or NAME@VERSION")
        parser.add_argument("--out", required=True, help="folder to write into")

    def handle(self, *args, **o):
        try:
            version = exports.dataset_version_by_spec(o["dataset"])
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        for path in exports.dataset_version_export(version=version, out_dir=o["out"]):
            self.stdout.write(f"wrote {path}")
        self.stdout.write(self.style.SUCCESS(f"{version}: {version.row_count} rows"))
