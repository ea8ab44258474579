import math
import time

from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = "Build the offline tiny LLaVA (random weights) into a save_pretrained folder."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--out", required=True, help="folder to write the checkpoint into")
        parser.add_argument("--seed", type=int, default=0)

    def handle(self, *args: object, out: str, seed: int, **options: object) -> None:
        from safetensors import safe_open

        from training.core.modeling import build_tiny_llava

        started = time.perf_counter()
        folder = build_tiny_llava(out, seed=seed)
        seconds = time.perf_counter() - started
        # Count from the saved weights rather than reloading the model: cheaper, and it is
        # what a later load_policy will actually read.
        with safe_open(str(folder / "model.safetensors"), framework="pt") as weights:
            names = weights.keys()
            params = sum(math.prod(weights.get_slice(name).get_shape()) for name in names)
        self.stdout.write(f"{folder} parameters={params} seconds={seconds:.1f}")
