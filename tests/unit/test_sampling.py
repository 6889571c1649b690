import pytest
import torch

from assistant.errors import GenerationOptionsError
from assistant.sampling import GenerationOptions, make_generator, sample_next_token

LOGITS = torch.tensor([0.1, 2.0, 1.5, -1.0, 0.0, 1.9])


def draws(options: GenerationOptions, count: int = 200) -> list[int]:
    generator = make_generator(options.seed)
    return [sample_next_token(LOGITS, options, generator) for _ in range(count)]


def test_greedy_is_the_argmax():
    assert set(draws(GenerationOptions(temperature=0.0), 20)) == {1}


def test_a_seed_makes_sampling_repeatable_and_seeds_differ():
    options = GenerationOptions(temperature=1.0, top_p=1.0, seed=1234)
    assert draws(options) == draws(options)
    assert draws(options) != draws(GenerationOptions(temperature=1.0, top_p=1.0, seed=4321))


def test_sampling_follows_the_distribution():
    samples = draws(GenerationOptions(temperature=1.0, top_p=1.0, seed=0), 4000)
    expected = torch.softmax(LOGITS, dim=-1)
    observed = torch.bincount(torch.tensor(samples), minlength=len(LOGITS)).float() / len(samples)
    assert torch.allclose(observed, expected, atol=0.03), f"observed {observed} vs softmax {expected}"


def test_top_k_keeps_only_the_k_most_likely():
    assert set(draws(GenerationOptions(temperature=2.0, top_p=1.0, top_k=2, seed=0))) == {1, 5}


def test_top_p_keeps_the_smallest_set_holding_p():
    # softmax: token 1 holds ~0.36, 5 ~0.33, 2 ~0.22: p=0.6 needs tokens 1 and 5 only.
    assert set(draws(GenerationOptions(temperature=1.0, top_p=0.6, seed=0))) == {1, 5}
    assert set(draws(GenerationOptions(temperature=1.0, top_p=0.01, seed=0))) == {1}, "the top token always stays"


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"temperature": -0.1}, "temperature must be between 0"),
        ({"top_p": 0.0}, r"top_p must be in \(0, 1\]"),
        ({"top_k": -1}, "top_k must be an integer >= 0"),
        ({"max_new_tokens": 0}, "max_new_tokens must be an integer >= 1"),
        ({"repetition_penalty": 0.0}, "repetition_penalty"),
        ({"seed": -5}, "seed must be an integer >= 0"),
    ],
)
def test_bad_options_are_rejected_once_with_their_values(fields, message):
    with pytest.raises(GenerationOptionsError, match=message) as caught:
        GenerationOptions(**fields)
    name, value = next(iter(fields.items()))
    assert f"{name}={value!r}" in str(caught.value), "the message shows the value that was given"


def test_repetition_penalty_steers_away_from_tokens_already_in_the_context():
    from assistant.sampling import SeededSampler

    scores = LOGITS.clone().unsqueeze(0)
    context = torch.tensor([[1, 1, 5]])  # the two most likely tokens were already said
    plain = SeededSampler(GenerationOptions(temperature=0.0), "cpu")(context, scores.clone())
    penalised = SeededSampler(GenerationOptions(temperature=0.0, repetition_penalty=3.0), "cpu")(
        context, scores.clone()
    )
    assert int(plain.argmax()) == 1
    assert int(penalised.argmax()) == 2, "with the penalty, the best token not yet said wins"
