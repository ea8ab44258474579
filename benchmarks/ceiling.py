"""The tiny LLaVA's ceiling on the shapes world: held-out accuracy after a full SFT.

Preference training only helps a model that can already do the task, so before the demo
had a start and a loop, issue 14 measured how far a plain supervised fine-tune of the tiny
model gets on the shapes world; README.md's ceiling table ("### The start and the loop")
came from this script. It builds the tiny LLaVA with the project's `build_tiny_llava`
(image tokens as built, or normalised to the text-embedding norm: `--normalised`, which
`load_policy` attaches from the config), at 32 or 64 px, draws scenes with 1-3 shapes from
`datasets_app.core.shapes`, asks one question per scene from the mix, cycled:

- count: "How many shapes are in the image?" -> "1".."3"
- colour: "What colour is the circle?" (a kind that appears once) -> "red"
- exist_colour: "Is there a red shape in the image?" -> "yes" / "no", half each
- exist_kind: "Is there a circle in the image?" -> "yes" / "no", half each
- exist: exist_colour or exist_kind at random (the table's "exists (both)")

each with the short-answer instruction the start is trained with, and trains every weight
(AdamW, lr warmed up over 100 steps then decayed linearly to 0, gradient clip 1.0, batch
32, loss on the answer tokens only). Every `--eval-every` steps it answers the held-out
items greedily and prints one JSON line: steps, train seconds (evaluation excluded), the
mean norm of a projected image token against that of a text embedding (the as-built
model's image tokens grow far past the text norm and it stops seeing the image), and exact
match per question kind and overall. About 100 held-out items per kind: +-5-9 points.

    .venv/bin/python benchmarks/ceiling.py [--normalised | --as-built] [--size 32|64] \
        [--mix count,colour,exist_colour] [--steps 4000] [--eval-every 1000] [--seed 0] \
        [--lr 1e-3] [--train-scenes 6000] [--heldout 300] [--threads 2]

The table's rows: `--as-built` / `--normalised`, `--size 64`, `--mix count,colour,exist`
(all three) or the default `count,colour,exist_colour`, `--seed 1`. CPU only, minutes: a
4,000-step run takes about 90 s of training on two threads.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from datasets_app.core import shapes
from training.core import modeling, tiny_models
from training.core.generation.templates import SHORT_ANSWER_SUFFIX

QUESTION_KINDS = ("count", "colour", "exist_colour", "exist_kind", "exist")
BATCH = 32
WARMUP = 100
EVAL_BATCH = 100

# (scene, question kind, question, answer)
Item = tuple[shapes.Scene, str, str, str]


def build(out: Path, *, size: int, normalised: bool, seed: int) -> Any:
    """The tiny LLaVA at `size` px, loaded as the project loads a policy."""
    old = tiny_models._IMAGE_SIZE
    tiny_models._IMAGE_SIZE = size  # build_tiny_llava reads it for the processor and config
    try:
        tiny_models.build_tiny_llava(out, seed=seed, normalise_image_tokens=normalised)
    finally:
        tiny_models._IMAGE_SIZE = old
    return modeling.load_policy(str(out), device="cpu")


def make_items(n_scenes: int, seed: int, mix: tuple[str, ...]) -> list[Item]:
    rng = random.Random(seed)
    items = []
    for i in range(n_scenes):
        scene = shapes.random_scene(rng, min_shapes=1, max_shapes=3)
        # A scene without a suitable question (no unique kind, no absent colour) asks a count.
        item = question(scene, mix[i % len(mix)], rng) or question(scene, "count", rng)
        assert item is not None
        kind, text, answer = item
        items.append((scene, kind, text + SHORT_ANSWER_SUFFIX, answer))
    return items


def question(scene: shapes.Scene, kind: str, rng: random.Random) -> tuple[str, str, str] | None:
    """(reported kind, question, single-word answer), or None if the scene has none."""
    if kind == "count":
        return "count", shapes.COUNT_TEXT, str(len(scene.shapes))
    if kind == "colour":
        seen = Counter(s.kind for s in scene.shapes)
        unique = [s for s in scene.shapes if seen[s.kind] == 1]
        if not unique:
            return None
        s = rng.choice(unique)
        return "colour", f"What colour is the {s.kind}?", s.colour
    if kind.startswith("exist"):
        want_yes = rng.random() < 0.5
        by_kind = rng.random() < 0.5 if kind == "exist" else kind == "exist_kind"
        if by_kind:
            kinds = {s.kind for s in scene.shapes}
            pool = sorted(kinds) if want_yes else sorted(set(shapes.KINDS) - kinds)
            if not pool:
                return None
            k = rng.choice(pool)
            return "exist_kind", f"Is there a {k} in the image?", "yes" if k in kinds else "no"
        colours = {s.colour for s in scene.shapes}
        pool = sorted(colours) if want_yes else sorted(set(shapes.COLOURS) - colours)
        if not pool:
            return None
        c = rng.choice(pool)
        answer = "yes" if c in colours else "no"
        return "exist_colour", shapes.colour_existence_text(c), answer
    raise ValueError(f"unknown question kind {kind!r}")


def encode(processor: Any, items: list[Item], *, train: bool) -> dict[str, torch.Tensor]:
    """Left-padded tensors: the prompts (to answer), or prompt + answer with labels on the
    answer tokens only (to train on)."""
    tok = processor.tokenizer
    images = [shapes.draw_scene(it[0]) for it in items]
    prompts, fulls = [], []
    for _, _, text, answer in items:
        conv = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
        prompts.append(processor.apply_chat_template(conv, add_generation_prompt=True))
        reply = {"role": "assistant", "content": [{"type": "text", "text": answer}]}
        fulls.append(processor.apply_chat_template([*conv, reply]))
    enc = processor(
        text=fulls if train else prompts, images=images, return_tensors="pt", padding=True
    )
    if train:
        labels = torch.full_like(enc["input_ids"], -100)
        for i, (prompt, full) in enumerate(zip(prompts, fulls, strict=True)):
            assert full.startswith(prompt)
            n_answer = len(tok(full).input_ids) - len(tok(prompt).input_ids)
            labels[i, -n_answer:] = enc["input_ids"][i, -n_answer:]
        enc["labels"] = labels
    return dict(enc)


def norms(model: Any, enc: dict[str, torch.Tensor]) -> tuple[float, float]:
    """Mean norm of a projected image token (as the language model sees it, after any
    normalising hook) and of a text embedding."""
    config = model.config
    with torch.no_grad():
        out = model.get_image_features(
            pixel_values=enc["pixel_values"][:64],
            vision_feature_layer=config.vision_feature_layer,
            vision_feature_select_strategy=config.vision_feature_select_strategy,
        )
        feats = getattr(out, "pooler_output", out)
        if isinstance(feats, (list, tuple)):
            feats = torch.cat([f.reshape(-1, f.shape[-1]) for f in feats])
        feats = feats.reshape(-1, feats.shape[-1])
        emb = model.get_input_embeddings().weight
        return float(feats.norm(dim=-1).mean()), float(emb.norm(dim=-1).mean())


def evaluate(
    model: Any, processor: Any, items: list[Item], enc: dict[str, torch.Tensor]
) -> dict[str, float]:
    """Greedy exact match (case and a trailing full stop ignored) per kind and overall."""
    tok = processor.tokenizer
    correct: Counter[str] = Counter()
    total: Counter[str] = Counter()
    model.eval()
    with torch.no_grad():
        for start in range(0, len(items), EVAL_BATCH):
            batch = {k: v[start : start + EVAL_BATCH] for k, v in enc.items()}
            out = model.generate(
                **batch, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id
            )
            texts = tok.batch_decode(
                out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True
            )
            for (_, kind, _, answer), text in zip(
                items[start : start + EVAL_BATCH], texts, strict=True
            ):
                ok = text.strip().rstrip(".").lower() == answer
                correct[kind] += ok
                total[kind] += 1
    model.train()
    acc = {k: round(correct[k] / total[k], 3) for k in sorted(total)}
    acc["all"] = round(sum(correct.values()) / sum(total.values()), 3)
    return acc


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    norm = parser.add_mutually_exclusive_group()
    norm.add_argument("--normalised", dest="normalised", action="store_true", default=True)
    norm.add_argument("--as-built", dest="normalised", action="store_false")
    parser.add_argument("--size", type=int, choices=(32, 64), default=32)
    parser.add_argument("--mix", default="count,colour,exist_colour")
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--eval-every", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--train-scenes", type=int, default=6000)
    parser.add_argument("--heldout", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    args.mix = tuple(k.strip() for k in args.mix.split(",") if k.strip())
    unknown = sorted(set(args.mix) - set(QUESTION_KINDS))
    if unknown or not args.mix:
        parser.error(f"--mix takes {', '.join(QUESTION_KINDS)}; not {', '.join(unknown)}")
    for name in ("steps", "eval_every", "train_scenes", "heldout", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    # Fixed item seeds: every configuration trains and is tested on the same questions.
    train_items = make_items(args.train_scenes, 1, args.mix)
    test_items = make_items(args.heldout, 2, args.mix)
    with tempfile.TemporaryDirectory() as tmp:
        policy = build(
            Path(tmp) / "tiny", size=args.size, normalised=args.normalised, seed=args.seed
        )
        train(args, policy.model, policy.processor, train_items, test_items)


def train(
    args: argparse.Namespace,
    model: Any,
    processor: Any,
    train_items: list[Item],
    test_items: list[Item],
) -> None:
    train_enc = encode(processor, train_items, train=True)
    test_enc = encode(processor, test_items, train=False)
    run = {
        "normalised": args.normalised,
        "size": args.size,
        "mix": list(args.mix),
        "seed": args.seed,
        "lr": args.lr,
    }

    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / WARMUP) * max(0.0, 1 - s / args.steps)
    )
    gen = torch.Generator().manual_seed(args.seed)
    n = train_enc["input_ids"].shape[0]
    train_s = 0.0
    losses: list[float] = []
    t = time.perf_counter()
    for step in range(1, args.steps + 1):
        idx = torch.randint(0, n, (BATCH,), generator=gen)
        out = model(**{k: v[idx] for k, v in train_enc.items()})
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        losses.append(float(out.loss.detach()))
        if step % args.eval_every == 0 or step == args.steps:
            train_s += time.perf_counter() - t
            image_norm, text_norm = norms(model, test_enc)
            acc = evaluate(model, processor, test_items, test_enc)
            recent = losses[-50:]
            line = {
                **run,
                "steps": step,
                "train_s": round(train_s, 1),
                "loss": round(sum(recent) / len(recent), 4),
                "image_norm": round(image_norm, 3),
                "text_norm": round(text_norm, 3),
                "acc": acc,
            }
            print(json.dumps(line), flush=True)
            t = time.perf_counter()


if __name__ == "__main__":
    main()
