import os

from django.core.management.base import BaseCommand

from workers.demo import demo_setup


class Command(BaseCommand):
    help = (
        "Create the demo users, build the tiny model and the instruction-tuned start (once, "
        "cached), draw and import shapes data."
    )

    def add_arguments(self, parser):
        parser.add_argument("--username", default=os.environ.get("DEMO_USERNAME", "admin"))
        parser.add_argument("--n", type=int, default=120, help="number of shapes images")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument(
            "--no-start",
            action="store_true",
            help="skip building the instruction-tuned start (a few minutes, once)",
        )

    def handle(self, *args, **opts):
        outcome = demo_setup(
            username=opts["username"],
            password=os.environ.get("DEMO_PASSWORD") or None,
            n_images=opts["n"],
            seed=opts["seed"],
            with_start=not opts["no_start"],
            log=self.stdout.write,
        )
        if outcome.password:
            self.stdout.write(f"demo login: {outcome.username} / {outcome.password}")
            self.stdout.write("  (also: curator and annotator, with the same password)")
        else:
            self.stdout.write(f"demo login: {outcome.username} (password set earlier, not shown)")
