import math
import time

from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = (
        "Build an offline tiny vision-language model (random weights) of one family into a "
        "save_pretrained folder: llava (CLIP + Llama) or qwen2_5_vl (dynamic resolution)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        from training.core.tiny_models import TINY_FAMILIES

        parser.add_argument("--out", required=True, help="folder to write the checkpoint into")
        parser.add_argument("--family", default="llava", choices=sorted(TINY_FAMILIES))
        parser.add_argument("--seed", type=int, default=0)

    def handle(self, *args: object, out: str, family: str, seed: int, **options: object) -> None:
        from safetensors import safe_open

        from training.core.tiny_models import build_tiny_vlm

        started = time.perf_counter()
        try:
            folder = build_tiny_vlm(out, family=family, seed=seed)
        except (OSError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        seconds = time.perf_counter() - started
        # Count from the saved weights rather than reloading the model: cheaper, and it is
        # what a later load_policy will actually read.
        with safe_open(str(folder / "model.safetensors"), framework="pt") as weights:
            names = weights.keys()
            params = sum(math.prod(weights.get_slice(name).get_shape()) for name in names)
        self.stdout.write(f"{folder} family={family} parameters={params} seconds={seconds:.1f}")
