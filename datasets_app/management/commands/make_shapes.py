"""Write the synthetic shapes world: `manage.py make_shapes --n 1000 --seed 0 --out DIR`."""

import json

from django.core.management.base import BaseCommand, CommandError

from datasets_app.core.shapes import make_shapes


class Command(BaseCommand):
    help = "Write DIR/scienceqa.parquet and DIR/pope.parquet of the synthetic shapes world."

    def add_arguments(self, parser):
        parser.add_argument("--n", type=int, default=1000, help="number of images")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--out", required=True, help="output directory")

    def handle(self, *args, n: int, seed: int, out: str, **options):
        try:
            counts = make_shapes(out, n=n, seed=seed)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(json.dumps(counts, indent=2))
