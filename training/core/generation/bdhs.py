"""Bias-Driven Hallucination Sampling (seed 002, section 3.4 and Appendix E, Algorithm 1):
the policy writes the rejected response itself, with its view of the image cut down.

For a prompt with a reference answer y+ split into sentences s_1..s_n, one try builds
y- sentence by sentence. Sentence k keeps the reference up to a random pivot (a leading
yes/no swapped with probability 0.5 first) and the model continues from there until the
sentence ends, given the whole reference before it (not its own earlier output), with the
image tokens' attention masked at random (ratio rho) or a noisy image. A try whose
similarity to y+ (cosine of sentence embeddings) is above the threshold is thrown away;
after `max_tries - 1` guided tries the last one is generated without guidance, and kept
whatever its similarity.

Pure core: the model is a `continue_fn(prefixes, guided) -> continuations` callable (one
call per try, every sentence of the try in one batch, as the paper parallelises them;
`guided` False for the last try, one empty prefix, a whole response wanted) and the
similarity a `similarity_fn(a, b) -> float`, so the algorithm is tested on fixed inputs;
`generation/core.py:continue_batch` and `generation/similarity.py` are the real ones.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

__all__ = [
    "BdhsParams",
    "BdhsResult",
    "bdhs_response",
    "cut_at_pivot",
    "first_sentence",
    "split_sentences",
    "swap_leading_yes_no",
]

ContinueFn = Callable[[Sequence[str], bool], list[str]]
SimilarityFn = Callable[[str, str], float]

# A sentence ends at . ! or ? followed by whitespace or the end (Algorithm 1 splits on
# full stops); the whitespace after it stays with the sentence, so joining restores the text.
_SENTENCE = re.compile(r".*?(?:[.!?](?=\s|$)\s*|$)", re.S)
# Algorithm 1, line 13: yes or no opening a sentence, after optional whitespace/newlines.
_YES_NO = re.compile(r"^(\s*)(yes|no)\b", re.I)
_SWAP = {"yes": "no", "no": "yes"}


@dataclass(frozen=True)
class BdhsParams:
    # Share of image-token attention masked (the paper's best, with LLaVA-1.6's redundant
    # AnyRes tokens, is close to 1).
    rho: float = 0.99
    noisy_image: bool = False  # the paper's other variant: a noisy image, no mask
    noise_steps: int = 500  # forward-diffusion steps of that variant (Appendix E.1)
    max_tries: int = 5  # N: the last try is unguided
    similarity_threshold: float = 0.95
    swap_probability: float = 0.5
    max_new_tokens: int = 32  # per sentence (per response, for the unguided try)

    def validate(self) -> None:
        problems = []
        if not 0.0 <= self.rho <= 1.0:
            problems.append(f"rho must be in [0, 1], not {self.rho}")
        if self.max_tries < 1:
            problems.append(f"max_tries must be at least 1, not {self.max_tries}")
        if not -1.0 <= self.similarity_threshold <= 1.0:
            problems.append("similarity_threshold is a cosine: in [-1, 1]")
        if not 0.0 <= self.swap_probability <= 1.0:
            problems.append("swap_probability must be in [0, 1]")
        if self.max_new_tokens < 1:
            problems.append("max_new_tokens must be at least 1")
        if not 0 <= self.noise_steps <= 1000:
            problems.append("noise_steps must be in [0, 1000]")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass
class BdhsResult:
    text: str
    tries: int  # how many tries it took (max_tries when the unguided one was used)
    similarity: float  # of the kept response to the reference
    guided: bool  # False: the last, unguided try
    similarities: list[float] = field(default_factory=list)  # of every try, in order


def split_sentences(text: str) -> list[str]:
    """The sentences of `text`, each with the whitespace that follows it."""
    return [s for s in _SENTENCE.findall(text) if s]


def first_sentence(text: str) -> str:
    """What a continuation contributes: up to and including its first sentence end."""
    sentences = split_sentences(text)
    return sentences[0] if sentences else ""


def swap_leading_yes_no(sentence: str, rng: random.Random, probability: float = 0.5) -> str:
    """A sentence opening with yes/no gets its counterpart with `probability`, case kept."""
    match = _YES_NO.match(sentence)
    if match is None or rng.random() >= probability:
        return sentence
    word = match.group(2)
    other = _SWAP[word.lower()]
    if word.isupper():
        other = other.upper()
    elif word[0].isupper():
        other = other.capitalize()
    return sentence[: match.start(2)] + other + sentence[match.end(2) :]


def cut_at_pivot(sentence: str, rng: random.Random) -> str:
    """The sentence up to a random pivot: a word boundary strictly before its end, so the
    model always writes at least the last word (pivot 0: the model writes it all)."""
    words = list(re.finditer(r"\S+", sentence))
    if not words:
        return ""
    pivot = rng.randrange(len(words))  # 0..n-1 words kept
    return sentence[: words[pivot].start()]


def _guided_try(
    reference: list[str], continue_fn: ContinueFn, rng: random.Random, params: BdhsParams
) -> str:
    kept, prefixes = [], []
    for k, sentence in enumerate(reference):
        swapped = swap_leading_yes_no(sentence, rng, params.swap_probability)
        if swapped != sentence:
            # The counterpart is the hallucination: it stays, and the pivot falls after it
            # (a one-word "Yes." would otherwise lose its swap to a pivot at 0).
            word_end = cast(re.Match[str], _YES_NO.match(swapped)).end()
            head = swapped[:word_end] + cut_at_pivot(swapped[word_end:], rng)
        else:
            head = cut_at_pivot(sentence, rng)
        kept.append(head)
        prefixes.append("".join(reference[:k]) + head)
    continuations = continue_fn(prefixes, True)
    if len(continuations) != len(prefixes):
        raise ValueError(f"{len(prefixes)} prefixes but {len(continuations)} continuations")
    sentences = []
    for head, continuation in zip(kept, continuations, strict=True):
        tail = first_sentence(continuation)
        # The reference's sentence spacing, so that the sentences join as the reference's do.
        sentences.append((head + tail).rstrip() + " ")
    return "".join(sentences).strip()


def bdhs_response(
    reference: str,
    continue_fn: ContinueFn,
    similarity_fn: SimilarityFn,
    rng: random.Random,
    params: BdhsParams | None = None,
) -> BdhsResult:
    """Algorithm 1 for one prompt: the rejected response for `reference`."""
    params = params or BdhsParams()
    params.validate()
    sentences = split_sentences(reference.strip())
    if not sentences:
        raise ValueError("BDHS needs a non-empty reference answer")
    similarities: list[float] = []
    for attempt in range(1, params.max_tries + 1):
        if attempt < params.max_tries:
            text = _guided_try(sentences, continue_fn, rng, params)
        else:
            (text,) = continue_fn([""], False)
            text = text.strip()
        similarity = float(similarity_fn(text, reference))
        similarities.append(similarity)
        guided = attempt < params.max_tries
        if not guided or similarity <= params.similarity_threshold:
            return BdhsResult(text, attempt, similarity, guided, similarities)
    raise AssertionError("unreachable: the last try always returns")
