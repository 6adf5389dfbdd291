"""The fast paths give the reference's results: low-resolution sampling logits (issue #6)."""

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from boltzformer.modeling.mask_decoder import BoltzFormerDecoder
from boltzformer.modeling.sampling import boltzmann_distribution, temperature


def _decoder(**sampling) -> BoltzFormerDecoder:
    torch.manual_seed(0)
    dec = BoltzFormerDecoder(hidden_dim=32, mask_dim=24, num_queries=6, num_heads=4,
                             ffn_dim=64, num_layers=3)
    dec.sampling = replace(dec.sampling, **sampling)
    return dec.eval()


def _features(size=64, batch=2, d=32, mask_dim=24, seed=1):
    g = torch.Generator().manual_seed(seed)
    levels = [torch.randn(batch, d, size // s, size // s, generator=g) for s in (32, 16, 8)]
    semantic = torch.randn(batch, mask_dim, size // 4, size // 4, generator=g)
    text = torch.randn(batch, 3, d, generator=g)
    return levels, semantic, text, torch.zeros(batch, 3, dtype=torch.bool)


@pytest.mark.parametrize("grid", [(2, 2), (4, 4), (8, 8), (5, 7)])
def test_lowres_sampling_probabilities_equal_the_reference(grid):
    dec = _decoder()
    _, semantic, _, _ = _features()
    queries = torch.randn(2, 6, 32)
    s_at = F.interpolate(semantic, size=grid, mode="bilinear", align_corners=False)
    probs = {}
    for logits in ("lowres", "reference"):
        dec.sampling = replace(dec.sampling, logits=logits)
        lg = dec.level_logits(queries, semantic, s_at, grid)
        assert lg.shape == (2, 6, *grid)
        probs[logits] = boltzmann_distribution(lg.flatten(2), temperature(8, 1.0))
    torch.testing.assert_close(probs["lowres"], probs["reference"], rtol=1e-5, atol=1e-7)


def test_decoder_draws_the_same_samples_with_lowres_and_reference_logits():
    levels, semantic, text, pad = _features()
    runs = {}
    for logits in ("lowres", "reference"):
        dec = _decoder(logits=logits)
        with torch.no_grad():
            runs[logits] = dec(levels, semantic, text, pad, return_sampling=True,
                               generator=torch.Generator().manual_seed(3))
    for a, b, lvl in zip(runs["lowres"].keep_masks, runs["reference"].keep_masks, levels * 3):
        assert a.shape[-2:] == lvl.shape[-2:]
        assert torch.equal(a, b)
    torch.testing.assert_close(runs["lowres"].query_logits, runs["reference"].query_logits)
