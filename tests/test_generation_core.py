"""The generation core on the tiny model and on fakes: seeds, batching, memory, templates."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from training.core.generation import (
    GeneratedSamples,
    GenerationError,
    GenerationRequest,
    PromptInput,
    SamplingParams,
    TransformersBackend,
    choose_backend_name,
    generate_batches,
    pack_batches,
    render_prompt,
)

pytestmark = pytest.mark.slow
COLOURS = ("red", "green", "blue", "yellow", "purple")


def _requests(n: int = 5) -> list[GenerationRequest]:
    return [
        GenerationRequest(
            key=str(100 + i),
            prompt=PromptInput("What colour is the square?", ("red", "blue", "green")),
            image=Image.new("RGB", (64, 64), COLOURS[i % len(COLOURS)]),
        )
        for i in range(n)
    ]


def _run(policy, params, *, budget=100_000, requests=None) -> dict[str, list[str]]:
    backend = TransformersBackend(policy)
    out = {}
    for batch in generate_batches(backend, requests or _requests(), params, token_budget=budget):
        for samples in batch:
            out[samples.key] = samples.texts
    return out


def test_k_distinct_samples_per_prompt_at_positive_temperature(tiny_policy):
    out = _run(tiny_policy, SamplingParams(k=4, temperature=0.9, max_new_tokens=12, seed=3))
    assert len(out) == 5
    for texts in out.values():
        assert len(texts) == 4 and len(set(texts)) == 4


def test_same_seed_same_text_other_seed_other_text(tiny_policy):
    params = SamplingParams(k=3, temperature=0.8, max_new_tokens=12, seed=11)
    first, again = _run(tiny_policy, params), _run(tiny_policy, params)
    assert first == again
    other = _run(tiny_policy, SamplingParams(k=3, temperature=0.8, max_new_tokens=12, seed=12))
    assert all(first[key] != other[key] for key in first)


def test_samples_do_not_depend_on_batching_or_k(tiny_policy):
    params = SamplingParams(k=2, temperature=1.0, max_new_tokens=10, seed=5)
    batched = _run(tiny_policy, params, budget=100_000)
    one_by_one = _run(tiny_policy, params, budget=1)
    assert batched == one_by_one
    # Sample j is seeded by (seed, prompt, j): raising K keeps the first samples.
    more = _run(tiny_policy, SamplingParams(k=4, temperature=1.0, max_new_tokens=10, seed=5))
    assert all(more[key][:2] == batched[key] for key in batched)


def test_greedy_is_one_sample_and_repeatable(tiny_policy):
    params = SamplingParams(k=1, temperature=0.0, max_new_tokens=8)
    assert _run(tiny_policy, params) == _run(tiny_policy, params, budget=1)


def test_token_counts_stop_at_eos(tiny_policy):
    backend = TransformersBackend(tiny_policy)
    params = SamplingParams(k=2, temperature=1.0, max_new_tokens=6, seed=1)
    (samples,) = backend.generate(_requests(1), params)
    assert all(1 <= n <= 6 for n in samples.token_counts)


def test_text_only_and_image_prompts_share_a_job(tiny_policy):
    mixed = [*_requests(2), GenerationRequest(key="9", prompt=PromptInput("Say hello."))]
    out = _run(tiny_policy, SamplingParams(k=2, max_new_tokens=6), requests=mixed)
    assert list(out) == ["100", "101", "9"] and all(len(t) == 2 for t in out.values())


def test_batches_respect_the_token_budget():
    requests = _requests(10)
    params = SamplingParams(k=4, max_new_tokens=10)
    lengths = {r.key: 20 + int(r.key) % 3 for r in requests}
    batches = list(pack_batches(requests, params, 400, lambda r: lengths[r.key]))
    assert [r.key for b in batches for r in b] == [r.key for r in requests]
    for batch in batches:
        longest = max(lengths[r.key] for r in batch)
        assert len(batch) == 1 or len(batch) * 4 * (longest + 10) <= 400
    assert len(batches) > 1


class _FakeBackend:
    """Runs out of memory above `fits` prompts, like a GPU would."""

    name = "fake"

    def __init__(self, fits: int) -> None:
        self.fits, self.calls = fits, []

    def prompt_tokens(self, request, params) -> int:
        return 1

    def generate(self, requests, params):
        self.calls.append(len(requests))
        if len(requests) > self.fits:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return [
            GeneratedSamples(r.key, [f"{r.key}-{j}" for j in range(params.k)]) for r in requests
        ]


def test_out_of_memory_halves_the_batch_until_it_fits():
    backend = _FakeBackend(fits=2)
    batches = list(generate_batches(backend, _requests(8), SamplingParams(k=2), token_budget=10**6))
    keys = [s.key for batch in batches for s in batch]
    assert keys == [r.key for r in _requests(8)]
    assert backend.calls == [8, 4, 2, 2, 4, 2, 2]


def test_out_of_memory_with_one_prompt_fails_with_advice():
    with pytest.raises(GenerationError, match="lower K or max_new_tokens"):
        list(
            generate_batches(_FakeBackend(fits=0), _requests(2), SamplingParams(), token_budget=10)
        )


def test_other_errors_are_not_mistaken_for_memory():
    class Broken(_FakeBackend):
        def generate(self, requests, params):
            raise ValueError("shape mismatch")

    with pytest.raises(ValueError, match="shape mismatch"):
        list(generate_batches(Broken(1), _requests(2), SamplingParams(), token_budget=10))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"k": 0}, "k must be"),
        ({"temperature": 3}, "temperature must be"),
        ({"temperature": 0, "k": 2}, "greedy"),
        ({"top_p": 0}, "top_p"),
        ({"template": "nope"}, "unknown prompt template"),
    ],
)
def test_bad_sampling_parameters_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        SamplingParams(**change).validate()


def test_k_is_not_part_of_the_sample_identity():
    assert SamplingParams(k=2).config_hash == SamplingParams(k=8).config_hash
    assert SamplingParams(seed=1).config_hash != SamplingParams(seed=2).config_hash


def test_templates_follow_seed_003():
    p = PromptInput("Which shape is red?", ("circle", "square"), hint="Look closely.")
    assert render_prompt("plain", p) == "Which shape is red?"
    zero_shot = render_prompt("zero_shot_mc", p)
    assert zero_shot.startswith("Given the question, please choose the answer")
    assert "'The answer is (answer)' format" in zero_shot
    assert "Question: Which shape is red?\nOptions:\nA. circle\nB. square" in zero_shot
    cot = render_prompt("cot_thought", p)
    assert "internal thoughts" in cot and "draft response and its evaluations" in cot
    assert "Context: Look closely." in cot


def test_backend_choice_without_vllm():
    assert choose_backend_name("auto", has_adapter=False) == "transformers"
    with pytest.raises(GenerationError, match="needs the vllm package"):
        choose_backend_name("vllm", has_adapter=False)
    with pytest.raises(ValueError, match="unknown backend"):
        choose_backend_name("tgi", has_adapter=False)


def _draw(temperature: float, top_p: float, rows: int = 4000) -> torch.Tensor:
    from training.core.generation.sampling import make_row_sampler

    sampler = make_row_sampler(list(range(rows)), temperature, top_p, 4, "cpu")
    logits = torch.log(torch.tensor([[0.6, 0.3, 0.1, 0.0]])).repeat(rows, 1)
    out = sampler(None, logits)
    assert torch.isfinite(out).sum(dim=-1).eq(1).all()  # exactly one token left per row
    return out.argmax(dim=-1)


def test_the_row_sampler_follows_the_distribution():
    counts = torch.bincount(_draw(1.0, 1.0), minlength=4).float() / 4000
    assert torch.allclose(counts, torch.tensor([0.6, 0.3, 0.1, 0.0]), atol=0.03)


def test_top_p_and_temperature_reshape_the_distribution():
    assert set(_draw(1.0, 0.5).tolist()) == {0}  # 0.6 alone reaches top_p 0.5
    assert set(_draw(1.0, 0.85).tolist()) == {0, 1}
    cold = torch.bincount(_draw(0.25, 1.0), minlength=4).float() / 4000
    assert cold[0] > 0.9  # (0.6/0.3)^4 = 16: low temperature sharpens


def test_generated_text_loses_nul_characters():
    from training.core.generation.core import clean_text

    assert clean_text(" a\x00b \n") == "ab"


STEER = "helpfulness:4,correctness:4,coherence:4,complexity:1,verbosity:1"


def test_steered_generation_opens_the_assistant_turn_with_the_label(tiny_policy):
    from training.core.generation.core import chat_text

    plain = SamplingParams(k=2, temperature=0.9, max_new_tokens=8, seed=1)
    steered = SamplingParams(k=2, temperature=0.9, max_new_tokens=8, seed=1, steer=STEER)
    request = _requests(1)[0]
    processor = tiny_policy.processor
    # The training row's text (the SteerLM export: label part, then the response) starts
    # with the steered prompt, and what follows is the response: the template's space after
    # "ASSISTANT:" is kept (it was dropped before, a token the model never saw in training).
    text = chat_text(processor, request, steered)
    assert text == chat_text(processor, request, plain) + " " + STEER + "\n"
    conversation = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q?"}]},
        {
            "role": "assistant",
            "content": [{"type": "text", "text": STEER + "\n"}, {"type": "text", "text": "red"}],
        },
    ]
    trained = processor.apply_chat_template(conversation)
    asked = processor.apply_chat_template(conversation[:1], add_generation_prompt=True)
    assert trained.startswith(asked + " " + STEER + "\n")
    backend = TransformersBackend(tiny_policy)
    label_tokens = len(processor.tokenizer(STEER + "\n", add_special_tokens=False).input_ids)
    assert backend.prompt_tokens(request, steered) >= backend.prompt_tokens(request, plain) + (
        label_tokens - 1  # the newline may merge with the template's last token
    )
    out = _run(tiny_policy, steered, requests=[request])
    assert len(out[request.key]) == 2 and out != _run(tiny_policy, plain, requests=[request])
    # the label is part of what decides a sample; no label leaves the old hashes alone
    assert steered.config_hash != plain.config_hash
    assert "steer" not in plain.sample_config()


def test_a_malformed_steering_label_is_refused():
    with pytest.raises(ValueError, match="bad SteerLM label part"):
        SamplingParams(steer="helpfulness:9").validate()
