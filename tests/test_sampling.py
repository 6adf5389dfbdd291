"""Boltzmann attention sampling (paper Eq. 5, footnote 1) on its own."""

import pytest
import torch

from boltzformer import BoltzFormerConfig, build_model
from boltzformer.modeling.sampling import (
    boltzmann_distribution,
    boltzmann_distribution_over,
    boltzmann_keep_mask,
    entropy,
    inclusion_probability,
    num_draws,
    sample_keep_mask,
    temperature,
    threshold_keep_mask,
    with_exploration,
)


@pytest.mark.parametrize("sampler", ["bernoulli", "multinomial"])
def test_inclusion_frequency_matches_one_minus_one_minus_p_to_the_n(sampler):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 1, 40, generator=g) * 4
    p = boltzmann_distribution(logits, tau=0.2)
    draws, trials = 5, 20000
    counts = torch.zeros(40)
    for _ in range(4):  # 4 x 5000 independent rows
        rows = p.expand(trials // 4, 1, 40).contiguous()
        counts += sample_keep_mask(rows, draws, sampler=sampler, generator=g).float().sum((0, 1))
    freq = counts / trials
    expected = 1 - (1 - p[0, 0]) ** draws
    # binomial standard error is at most 0.5 / sqrt(20000) = 0.0035
    assert torch.allclose(freq, expected, atol=0.015), (freq - expected).abs().max()


def test_inclusion_probability_is_stable_at_the_extremes():
    p = torch.tensor([0.0, 1e-12, 0.5, 1.0])
    q = inclusion_probability(p, 10)
    assert q[0] == 0 and q[3] == 1
    assert torch.isclose(q[1], torch.tensor(1e-11), rtol=1e-3)
    assert torch.isclose(q[2], torch.tensor(1 - 0.5**10))


def test_lower_temperature_gives_lower_entropy():
    logits = torch.randn(4, 7, 256, generator=torch.Generator().manual_seed(1)) * 3
    entropies = [entropy(boltzmann_distribution(logits, t)).mean() for t in (2.0, 1.0, 0.5, 0.1)]
    assert all(a > b for a, b in zip(entropies, entropies[1:]))


def test_schedule_is_tau0_over_one_plus_layer():
    for tau0 in (0.25, 1.0, 2.0):
        assert [temperature(layer, tau0) for layer in range(4)] == pytest.approx(
            [tau0, tau0 / 2, tau0 / 3, tau0 / 4]
        )
    with pytest.raises(ValueError):
        temperature(0, 0.0)


def test_softmax_form_is_stable_for_tiny_temperatures():
    logits = torch.tensor([[[50.0, -50.0, 0.0, 49.0]]])
    p = boltzmann_distribution(logits, tau=1e-4)
    assert torch.isfinite(p).all() and torch.isclose(p.sum(), torch.tensor(1.0))
    keep = boltzmann_keep_mask(logits, tau=1e-4, ratio=0.5)
    assert keep.any()


def test_sampling_is_reproducible_from_a_generator_and_carries_no_gradient():
    logits = torch.randn(2, 5, 64, requires_grad=True)
    a = boltzmann_keep_mask(logits, tau=1.0, ratio=0.1, generator=torch.Generator().manual_seed(3))
    b = boltzmann_keep_mask(logits, tau=1.0, ratio=0.1, generator=torch.Generator().manual_seed(3))
    c = boltzmann_keep_mask(logits, tau=1.0, ratio=0.1, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.dtype == torch.bool and not a.requires_grad


def test_number_of_draws_is_the_ratio_of_tokens_truncated_as_in_the_release():
    assert num_draws(1024, 0.1) == 102
    assert num_draws(256, 0.1) == 25  # 25.6, not rounded to 26
    assert num_draws(4096, 0.1) == 409
    assert num_draws(4, 0.1) == 0


def test_zero_draws_keep_every_token():
    keep = boltzmann_keep_mask(torch.randn(2, 3, 4), tau=1.0, ratio=0.1)
    assert keep.all()


def test_always_keep_threshold_and_empty_rows():
    logits = torch.full((1, 2, 16), -30.0)
    logits[0, 0, 3] = 30.0  # sigmoid ~ 1
    keep = boltzmann_keep_mask(logits, tau=1.0, ratio=0.01, keep_threshold=0.9)
    assert keep[0, 0, 3]
    masked = threshold_keep_mask(logits, 0.5)
    assert masked[0, 0].sum() == 1 and masked[0, 0, 3]
    assert masked[0, 1].all()  # a query that would see nothing sees everything


def test_a_threshold_of_exactly_one_still_keeps_saturated_tokens():
    # sigmoid(40) rounds to 1.0 in float32: always kept at threshold 1.0, never above 1; with
    # one draw per row (ratio 1/64) sampling picks it in ~4 % of the 200 rows
    logits = torch.full((1, 200, 64), -30.0)
    logits[0, :, 5] = 40.0
    g = torch.Generator().manual_seed(0)
    for heads in (None, 4):
        at_one = boltzmann_keep_mask(logits, tau=1.0, ratio=1 / 64, keep_threshold=1.0,
                                     heads=heads, generator=g)
        assert at_one[..., 5].all()
        above = boltzmann_keep_mask(logits, tau=1.0, ratio=1 / 64, keep_threshold=1.1,
                                    heads=heads, generator=g)
        assert above[..., 5].float().mean() < 0.7  # ~0.4: rows left empty get every token


def test_always_kept_tokens_leave_the_distribution_which_is_renormalised():
    logits = torch.tensor([[[4.0, 3.0, -1.0, -2.0, 0.0]]])  # sigmoid: .98 .95 .27 .12 .5
    p = boltzmann_distribution_over(logits, 0.5, keep_threshold=0.9)
    assert p[0, 0, 0] == 0 and p[0, 0, 1] == 0
    rest = torch.softmax(torch.sigmoid(logits[0, 0, 2:]) / 0.5, -1)
    torch.testing.assert_close(p[0, 0, 2:], rest)
    # above 1 nothing is always kept: Eq. 5 over every token
    torch.testing.assert_close(boltzmann_distribution_over(logits, 0.5, keep_threshold=1.1),
                               boltzmann_distribution(logits, 0.5))


def test_per_head_draws_are_independent_with_the_same_distribution():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 400, generator=g)
    keep = boltzmann_keep_mask(logits, tau=1.0, ratio=0.1, heads=8, generator=g)
    assert keep.shape == (2, 8, 3, 400)
    assert not torch.equal(keep[:, 0], keep[:, 1])  # independent draws
    # each head keeps what one draw keeps: about 1 - (1 - 1/n)^N of the tokens at random logits
    share = keep.float().mean()
    assert abs(float(share) - float(keep[:, 0].float().mean())) < 0.03
    assert keep.any(1).float().mean() > 2 * share  # the union over heads is larger


def test_exploration_mixes_a_uniform_share_over_the_eligible_tokens():
    p = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(with_exploration(p, 0.5),
                               torch.tensor([[0.625, 0.125, 0.125, 0.125]]))
    assert with_exploration(p, 0.0) is p  # the paper: unchanged
    # always-kept tokens (not eligible) get no uniform share
    q = torch.tensor([[0.0, 1.0, 0.0, 0.0]])
    eligible = torch.tensor([[False, True, True, True]])
    torch.testing.assert_close(with_exploration(q, 0.3, eligible),
                               torch.tensor([[0.0, 0.8, 0.1, 0.1]]))
    with pytest.raises(ValueError, match="exploration"):
        with_exploration(p, 1.0)


def test_exploration_keeps_sampling_away_from_a_confident_peak():
    # one confident token among 1024 at a cold temperature: Eq. 5 puts ~all mass on it
    logits = torch.full((64, 1, 1024), -10.0)
    logits[..., 7] = 10.0
    g = torch.Generator().manual_seed(0)
    cold = boltzmann_keep_mask(logits, tau=0.05, ratio=0.1, generator=g).sum(-1).float()
    warm = boltzmann_keep_mask(logits, tau=0.05, ratio=0.1, explore=0.5,
                               generator=g).sum(-1).float()
    assert cold.mean() < 1.5
    # half of N = 102 draws uniform: each other token kept w.p. 1-(1-0.5/1024)^102 = 0.0485
    assert 40 < warm.mean() < 62


def test_config_checks_the_exploration_share_and_the_decoder_receives_it():
    from_config = build_model("tiny", sampling_explore=0.25)
    assert from_config.decoder.sampling.explore == 0.25
    with pytest.raises(ValueError, match="sampling_explore"):
        BoltzFormerConfig(sampling_explore=1.0)
