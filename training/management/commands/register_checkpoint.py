from django.core.management.base import BaseCommand, CommandError, CommandParser

from training.services.checkpoints import checkpoint_register


class Command(BaseCommand):
    help = (
        "Register a checkpoint (a folder or a hub id, optionally with a LoRA adapter) so that "
        "every --checkpoint / --base option can name it; its config and processor must load."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "model", metavar="PATH_OR_HUB_ID", help="a checkpoint folder or a hub id"
        )
        parser.add_argument("--name", default="", help="default: the hub id or the folder name")
        parser.add_argument("--adapter", default="", help="a LoRA adapter folder on top of it")
        parser.add_argument("--notes", default="")

    def handle(self, *args: object, **o: str) -> None:
        try:
            checkpoint = checkpoint_register(
                model_path=o["model"], name=o["name"], adapter_path=o["adapter"], notes=o["notes"]
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        adapter = f" + {checkpoint.adapter_path}" if checkpoint.adapter_path else ""
        self.stdout.write(
            self.style.SUCCESS(
                f"checkpoint {checkpoint.name!r} registered (id {checkpoint.pk}): "
                f"{checkpoint.model_path}{adapter}"
            )
        )
