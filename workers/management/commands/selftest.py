import time

from django.core.management.base import BaseCommand, CommandError

from config.celery import QUEUES
from workers import services
from workers.models import Job


class Command(BaseCommand):
    help = "Send a test job through a queue; with --wait, fail unless a worker completes it."

    def add_arguments(self, parser):
        parser.add_argument("--queue", default="default", choices=QUEUES)
        parser.add_argument("--wait", action="store_true")
        parser.add_argument("--timeout", type=float, default=60.0)

    def handle(self, *args, **opts):
        job = services.selftest_enqueue(queue=opts["queue"])
        self.stdout.write(f"job {job.pk} sent to queue {opts['queue']}")
        if not opts["wait"]:
            return
        deadline = time.monotonic() + opts["timeout"]
        while time.monotonic() < deadline:
            job.refresh_from_db()
            if job.is_finished:
                break
            time.sleep(0.2)
        if job.status != Job.Status.SUCCEEDED:
            raise CommandError(
                f"job {job.pk} is {job.status} after {opts['timeout']} s: "
                f"{job.error or 'no worker consumed queue ' + opts['queue']}"
            )
        self.stdout.write(self.style.SUCCESS(f"job {job.pk} succeeded on {job.worker}"))
