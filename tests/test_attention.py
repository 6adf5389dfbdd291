"""Cross-attention restricted to the sampled set (paper Step 2) and the attention modes."""

import pytest
import torch

from boltzformer import build_model
from boltzformer.modeling.attention import SampledCrossAttention, SelfAttentionLayer
from boltzformer.modeling.mask_decoder import MaskHead


def _inputs(seed=0, b=2, q=3, n=20, d=16):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, q, d, generator=g), torch.randn(b, n, d, generator=g),
            torch.randn(b, n, d, generator=g))


@pytest.mark.parametrize("impl", ["dense", "sparse"])
def test_tokens_outside_the_sampled_set_do_not_affect_a_query(impl):
    torch.manual_seed(0)
    attn = SampledCrossAttention(16, 4, impl=impl)
    query, _, mem = _inputs()
    keep = torch.rand(2, 3, 20) < 0.3
    keep[..., 0] = True
    base = attn(query, mem, keep)
    outside = (~keep[0, 1]).nonzero()[0, 0]
    inside = keep[0, 1].nonzero()[0, 0]

    mem2 = mem.clone()
    mem2[0, outside] += 10.0
    out = attn(query, mem2, keep)
    assert torch.allclose(out[0, 1], base[0, 1], atol=1e-5)

    mem3 = mem.clone()
    mem3[0, inside] += 10.0
    out = attn(query, mem3, keep)
    assert not torch.allclose(out[0, 1], base[0, 1], atol=1e-3)


def _model(**kw):
    torch.manual_seed(0)
    return build_model("tiny", image_size=64, **kw).eval()


def test_boltzmann_with_every_token_kept_equals_full_attention():
    full = _model(attention="full")
    boltz = _model(attention="boltzmann", keep_threshold=0.0)  # sigmoid >= 0: every token
    boltz.load_state_dict(full.state_dict())
    x = torch.rand(2, 3, 64, 64) * 255
    prompts = ["nodule in lung CT", "liver in abdomen MRI"]
    with torch.no_grad():
        a = full(x, prompts).logits
        out = boltz(x, prompts, return_sampling=True)
    assert all(k.all() for k in out.keep_masks)
    assert torch.allclose(a, out.logits, atol=1e-5)


def test_masked_mode_keeps_exactly_the_tokens_at_or_above_one_half():
    model = _model(attention="masked")
    dec = model.decoder
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 10, 128, generator=g)
    semantic = torch.randn(2, 128, 16, 16, generator=g)
    level = torch.nn.functional.interpolate(semantic, size=(4, 4), mode="bilinear")
    logits = dec.level_logits(q, semantic, level, (4, 4))
    keep = dec._keep(logits, 0, None).view(2, 10, 4, 4)
    with torch.no_grad():
        probs = MaskHead.logits(dec.mask_head.embed(q), level).sigmoid()
    expected = probs >= 0.5
    nonempty = expected.flatten(2).any(-1)
    assert nonempty.any()
    assert torch.equal(keep[nonempty], expected[nonempty])
    assert keep[~nonempty].all()  # queries that would see nothing see everything



def test_per_head_sampling_draws_per_head_and_reports_the_union():
    model = _model(sampling_per_head=True)
    x = torch.rand(1, 3, 64, 64) * 255
    with torch.no_grad():
        out = model(x, ["nodule in lung CT"], return_sampling=True,
                    generator=torch.Generator().manual_seed(0))
    assert [k.shape for k in out.keep_masks[:3]] == [(1, 10, 2, 2), (1, 10, 4, 4), (1, 10, 8, 8)]
    seen = []
    real = model.decoder.cross[2].attn.forward

    def spy(query, memory, keep, pos=None):
        seen.append(keep)
        return real(query, memory, keep, pos)

    model.decoder.cross[2].attn.forward = spy
    with torch.no_grad():
        out = model(x, ["nodule in lung CT"], return_sampling=True,
                    generator=torch.Generator().manual_seed(0))
    assert seen[0].shape == (1, 4, 10, 64)  # (B, heads, Q, n): one draw per head
    assert not torch.equal(seen[0][:, 0], seen[0][:, 1])
    assert torch.equal(out.keep_masks[2].flatten(2), seen[0].any(1))


def test_given_keep_masks_replace_the_sampling():
    model = _model()
    feats = model.encode_image(torch.rand(1, 3, 64, 64) * 255)
    text = model.encode_text(["nodule in lung CT"])
    every = [torch.ones(1, 10, s, s, dtype=torch.bool) for s in (2, 4, 8) * 3]
    with torch.no_grad():
        given = model.decoder(feats.levels, feats.semantic, text.tokens, text.padding,
                              given_keep=every).query_logits
        model.decoder.sampling = type(model.decoder.sampling)(attention="full")
        full = model.decoder(feats.levels, feats.semantic, text.tokens, text.padding).query_logits
    torch.testing.assert_close(given, full, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="2 keep masks given for 9 layers"):
        model.decoder(feats.levels, feats.semantic, text.tokens, text.padding,
                      given_keep=every[:2])


def test_self_attention_stays_float32_under_cpu_bf16_autocast():
    """Its small (S x S) products are slower in bf16 on the CPU: under autocast it computes
    exactly what it computes without."""
    torch.manual_seed(0)
    layer = SelfAttentionLayer(16, 4)
    x, pos = torch.randn(3, 7, 16), torch.randn(3, 7, 16)
    padding = torch.zeros(3, 7, dtype=torch.bool)
    padding[:, -2:] = True
    plain = layer(x, pos, padding)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cast = layer(x.bfloat16(), pos, padding)
    assert cast.dtype == torch.float32
    assert torch.allclose(cast, layer(x.bfloat16().float(), pos, padding), atol=1e-6)
    assert plain.dtype == torch.float32 and not torch.equal(cast, plain)  # x was rounded
