from django.core.management.base import BaseCommand, CommandError

from training.services import machines


class Command(BaseCommand):
    help = (
        "On a machine of rank 1 or more (TRAIN_MACHINE_RANK): join every training job that "
        "the rank-0 gpu worker runs on TRAIN_NUM_MACHINES machines, one after another."
    )

    def add_arguments(self, parser):
        parser.add_argument("--poll-s", type=float, default=5.0, help="seconds between looks")
        parser.add_argument("--once", action="store_true", help="join one job, then exit")

    def handle(self, *args, **o):
        try:
            rank = machines.worker_machines().rank
            machines.training_follow(
                rank=rank,
                poll_s=o["poll_s"],
                max_jobs=1 if o["once"] else None,
                say=self.stdout.write,
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
