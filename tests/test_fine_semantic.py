"""The finer mask path (semantic_stride=2): shapes, gradient, the stem fallback, checkpoints."""

from __future__ import annotations

import pytest
import torch

from boltzformer import BoltzFormer, build_model
from boltzformer.modeling.fine_semantic import FineSemantic


def test_stride2_masks_are_finer_while_layers_stay_at_stride_4(small_model, tmp_path) -> None:
    torch.manual_seed(0)
    model = build_model("tiny", **small_model, semantic_stride=2)
    assert model.backbone.stride2_channels is not None  # resnet10t's stem map
    images = torch.rand(2, 3, 64, 64) * 255
    out = model(images, ["liver", "nodule"], return_layers=True,
                generator=torch.Generator().manual_seed(0))
    q = model.config.num_queries
    assert out.logits.shape == (2, 1, 64, 64)
    assert out.query_logits.shape == (2, q, 32, 32)  # Eq. 1 on S at H/2
    assert all(t.shape == (2, q, 16, 16) for t in out.layer_logits)  # supervised at H/4
    (out.logits.sum() + sum(t.sum() for t in out.layer_logits)).backward()
    for name, module in (("fine", model.fine_semantic), ("backbone", model.backbone)):
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), name
    assert model.fine_semantic.lateral[0].weight.grad.abs().sum() > 0

    model.eval().save_pretrained(tmp_path / "m")
    again = BoltzFormer.from_pretrained(tmp_path / "m").eval()
    assert again.config.semantic_stride == 2
    g = torch.Generator()
    assert torch.equal(again(images, ["liver", "x"], generator=g.manual_seed(1)).logits,
                       model(images, ["liver", "x"], generator=g.manual_seed(1)).logits)


def test_the_default_model_has_no_fine_path(small_model) -> None:
    model = build_model("tiny", **small_model)
    assert model.fine_semantic is None and model.backbone.stride2_channels is None
    out = model(torch.rand(1, 3, 64, 64) * 255, ["liver"])
    assert out.query_logits.shape[-2:] == (16, 16)


def test_a_backbone_without_stride_2_gets_a_stem_on_the_image() -> None:
    fine = FineSemantic(16, in_channels=None, width=8)
    s4 = torch.randn(2, 16, 8, 8, requires_grad=True)
    x = fine(s4, torch.randn(2, 3, 32, 32))
    assert x.shape == (2, 8, 16, 16)
    x.sum().backward()
    assert s4.grad.abs().sum() > 0 and fine.stem[0].weight.grad.abs().sum() > 0


def test_fine_masks_equal_the_dot_product_on_the_stride_2_map() -> None:
    """mu . S_2 with S_2 = up2(S) + W x + b, computed without building S_2."""
    torch.manual_seed(0)
    fine = FineSemantic(16, in_channels=4, width=8)
    s4, mu = torch.randn(2, 16, 8, 8), torch.randn(2, 3, 16)
    x = fine(s4, torch.randn(2, 4, 16, 16))
    s2 = (torch.nn.functional.interpolate(s4, size=(16, 16), mode="bilinear")
          + fine.proj(x))
    expected = torch.einsum("bqd,bdhw->bqhw", mu, s2)
    got = fine.masks(torch.einsum("bqd,bdhw->bqhw", mu, s4), mu, x)
    assert torch.allclose(got, expected, atol=1e-4)


def test_semantic_stride_must_be_4_or_2(small_model) -> None:
    with pytest.raises(ValueError, match="semantic_stride must be 4 or 2"):
        build_model("tiny", **small_model, semantic_stride=8)
