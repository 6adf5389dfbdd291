"""The fast paths give the reference's results (issue #6): low-resolution sampling logits,
sparse sampled cross-attention, the whole model; and the `bench` verb runs."""

import json
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from boltzformer import build_model
from boltzformer.cli import main
from boltzformer.modeling.attention import (
    SampledCrossAttention,
    gather_index,
    plan_chunks,
    prefers_sparse,
)
from boltzformer.modeling.mask_decoder import BoltzFormerDecoder
from boltzformer.modeling.position import sine_positions
from boltzformer.modeling.sampling import boltzmann_distribution, temperature


@pytest.fixture(autouse=True)
def _one_thread():
    """These tests run many small ops; on a busy machine every multi-threaded op can wait a
    scheduler slice for its second thread, so they run on one."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


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


# --- sparse sampled cross-attention ---------------------------------------------------------
def _attention_inputs(b=2, q=5, h=6, w=7, d=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    query = torch.randn(b, q, d, generator=g)
    memory = torch.randn(b, h * w, d, generator=g)
    keep = torch.rand(b, q, h * w, generator=g) < 0.2
    keep[0, 0] = True  # a query that keeps every token
    keep[0, 1] = False
    keep[0, 1, 17] = True  # a query that keeps exactly one token
    keep[1, 4] = False
    keep[1, 4, -1] = True  # one token, the last
    keep |= ~keep.any(-1, keepdim=True)
    return query, memory, keep, sine_positions(h, w, d)


def _run(attn, impl, query, memory, keep, pos):
    """Output and every gradient (query, memory, parameters) of a fixed weighted loss."""
    attn.impl = impl
    attn.zero_grad(set_to_none=True)
    query = query.clone().requires_grad_()
    memory = memory.clone().requires_grad_()
    out = attn(query, memory, keep, pos)
    weights = torch.linspace(-1, 1, out.numel()).view_as(out)
    (out * weights).sum().backward()
    grads = {"query": query.grad, "memory": memory.grad}
    grads.update({name: p.grad for name, p in attn.named_parameters()})
    return out.detach(), grads


@pytest.mark.parametrize("with_pos", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sparse_attention_equals_dense_outputs_and_gradients(seed, with_pos):
    torch.manual_seed(seed)
    attn = SampledCrossAttention(32, 4)
    query, memory, keep, pos = _attention_inputs(seed=seed)
    pos = pos if with_pos else None
    dense_out, dense_grads = _run(attn, "dense", query, memory, keep, pos)
    sparse_out, sparse_grads = _run(attn, "sparse", query, memory, keep, pos)
    torch.testing.assert_close(sparse_out, dense_out, rtol=1e-5, atol=1e-6)
    assert dense_grads.keys() == sparse_grads.keys()
    for name, g in dense_grads.items():
        # k_proj.bias shifts all scores of a query equally: its exact gradient is zero and
        # both paths give float noise around it.
        atol = 1e-6 if name == "k_proj.bias" else 1e-5
        torch.testing.assert_close(sparse_grads[name], g, rtol=1e-4, atol=atol, msg=name)


@pytest.mark.parametrize("seed", [0, 1])
def test_per_head_keep_masks_sparse_equals_dense_and_heads_differ(seed):
    torch.manual_seed(seed)
    attn = SampledCrossAttention(32, 4)
    query, memory, _, pos = _attention_inputs(seed=seed)
    g = torch.Generator().manual_seed(seed)
    keep = torch.rand(2, 4, 5, 42, generator=g) < 0.2  # (B, heads, Q, n)
    keep[0, 1, 2] = False
    keep[0, 1, 2, 5] = True  # one head of one query keeps one token
    keep |= ~keep.any(-1, keepdim=True)
    dense_out, dense_grads = _run(attn, "dense", query, memory, keep, pos)
    sparse_out, sparse_grads = _run(attn, "sparse", query, memory, keep, pos)
    torch.testing.assert_close(sparse_out, dense_out, rtol=1e-5, atol=1e-6)
    for name, g_dense in dense_grads.items():
        atol = 1e-6 if name == "k_proj.bias" else 1e-5
        torch.testing.assert_close(sparse_grads[name], g_dense, rtol=1e-4, atol=atol, msg=name)
    # the same mask for every head is the shared mask
    shared = keep[:, 0]
    torch.testing.assert_close(_run(attn, "sparse", query, memory, shared[:, None].expand_as(keep),
                                    pos)[0], _run(attn, "dense", query, memory, shared, pos)[0],
                               rtol=1e-5, atol=1e-6)


def test_sparse_attention_matches_dense_across_chunk_boundaries(monkeypatch):
    import boltzformer.modeling.attention as attention

    torch.manual_seed(0)
    attn = SampledCrossAttention(32, 4)
    query, memory, keep, pos = _attention_inputs(q=9)
    dense_out, dense_grads = _run(attn, "dense", query, memory, keep, pos)
    capacity = int(keep.sum(-1).max())
    # chunks of 4 rows out of 18: the last chunk is partial
    monkeypatch.setattr(attention, "CHUNK_BYTES", 4 * capacity * 32 * 4)
    sparse_out, sparse_grads = _run(attn, "sparse", query, memory, keep, pos)
    torch.testing.assert_close(sparse_out, dense_out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sparse_grads["memory"], dense_grads["memory"], rtol=1e-4,
                               atol=1e-5)


def test_sparse_attention_follows_autocast_like_dense():
    torch.manual_seed(0)
    attn = SampledCrossAttention(32, 4)
    query, memory, keep, pos = _attention_inputs()
    outs = {}
    for impl in ("dense", "sparse"):
        attn.impl = impl
        memory_leaf = memory.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = attn(query, memory_leaf, keep, pos)
        out.float().sum().backward()
        assert out.dtype == torch.bfloat16 and memory_leaf.grad.dtype == torch.float32
        outs[impl] = out.float()
    torch.testing.assert_close(outs["sparse"], outs["dense"], rtol=3e-2, atol=3e-2)


def test_gather_index_packs_each_querys_kept_tokens_sorted_by_count():
    keep = torch.tensor([[[1, 0, 1, 1], [0, 0, 0, 1]], [[1, 1, 1, 1], [0, 1, 0, 0]]]).bool()
    kept = gather_index(keep)
    assert kept.tokens.shape == kept.valid.shape == (4, 4)
    assert kept.counts == [1, 1, 3, 4]
    assert sorted(kept.order.tolist()) == [0, 1, 2, 3]
    flat = keep.reshape(4, 4)
    for packed, row in enumerate(kept.order.tolist()):
        assert kept.tokens[packed][kept.valid[packed]].tolist() == flat[row].nonzero().flatten(
        ).tolist()


def test_plan_chunks_pads_each_chunk_to_its_own_largest_count(monkeypatch):
    import boltzformer.modeling.attention as attention

    monkeypatch.setattr(attention, "CHUNK_BYTES", 100)
    chunks = plan_chunks([1, 2, 2, 5, 9, 30], width=1, itemsize=4)
    assert chunks == ((0, 4, 5), (4, 5, 9), (5, 6, 30))  # rows x capacity <= 25 floats


def test_grid_positions_dot_equals_the_dense_encoding():
    pos = sine_positions(5, 7, 16)
    vectors = torch.randn(3, 2, 16)
    tokens = torch.randint(0, 35, (3, 9))
    expected = torch.einsum("rkd,rtd->rkt", vectors, pos.dense()[tokens])
    torch.testing.assert_close(pos.dot(vectors, tokens), expected)


def test_sparse_attention_rejects_a_query_with_no_token():
    attn = SampledCrossAttention(32, 4, impl="sparse")
    query, memory, keep, pos = _attention_inputs()
    keep[1, 2] = False
    with pytest.raises(ValueError, match="keeps no token"):
        attn(query, memory, keep, pos)


def test_auto_chooses_sparse_only_where_it_saves_work():
    # paper decoder, 128x128 level, 10% kept: sparse
    assert prefers_sparse(1, 101, 128 * 128, 512, 8, kept_pairs=101 * 1640)
    # masked attention keeping half the tokens: dense
    assert not prefers_sparse(1, 101, 128 * 128, 512, 8, kept_pairs=101 * 8192)
    # a tiny level: too little work to pay for gathering
    assert not prefers_sparse(1, 10, 8 * 8, 128, 4, kept_pairs=10 * 8)


def test_unknown_impl_is_an_error_that_lists_the_choices():
    with pytest.raises(ValueError, match="auto, sparse, dense"):
        SampledCrossAttention(32, 4, impl="flash")
    with pytest.raises(ValueError, match="auto, sparse, dense"):
        _decoder().set_attention_impl("flash")


# --- the whole model ------------------------------------------------------------------------
def test_whole_model_outputs_and_gradients_are_the_same_with_sparse_and_dense_attention():
    torch.manual_seed(0)
    model = build_model("tiny", image_size=64).eval()
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 255
    prompts = ["nodule in lung CT", "left adrenal gland in abdomen CT"]
    runs = {}
    for impl in ("dense", "sparse"):
        model.decoder.set_attention_impl(impl)
        model.zero_grad(set_to_none=True)
        out = model(images, prompts, generator=torch.Generator().manual_seed(5),
                    return_sampling=True)
        out.logits.mean().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        runs[impl] = (out, grads)
    (dense, dense_grads), (sparse, sparse_grads) = runs["dense"], runs["sparse"]
    for a, b in zip(dense.keep_masks, sparse.keep_masks):
        assert torch.equal(a, b)  # the same samples, so the comparison is like for like
    torch.testing.assert_close(sparse.logits, dense.logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(sparse.query_logits, dense.query_logits, rtol=1e-4, atol=1e-5)
    assert sparse_grads.keys() == dense_grads.keys()
    for name, g in dense_grads.items():
        atol = 1e-5 if "k_proj.bias" in name else 1e-4
        torch.testing.assert_close(sparse_grads[name], g, rtol=1e-3, atol=atol, msg=name)


# --- the bench verb -------------------------------------------------------------------------
def test_bench_cli_smoke(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(["bench", "--preset", "tiny", "--sizes", "128,256", "--decoder-only",
                 "--repeats", "1", "--warmup", "0", "--json", str(out), "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "boltzmann-fast" in printed and "Exponent" in printed
    result = json.loads(out.read_text())
    assert {r["mode"] for r in result["results"]} == {
        "full", "masked", "boltzmann-reference", "boltzmann-fast"}
    assert {r["size"] for r in result["results"]} == {128, 256}
    row = {(r["size"], r["mode"]): r for r in result["results"]}
    for size in (128, 256):
        for r in (row[size, m] for m in ("full", "boltzmann-fast")):
            assert r["forward_seconds"] > 0 and r["forward_backward_seconds"] > 0
            assert r["peak_memory_bytes"]["forward_backward"] > 0
            assert r["flops"]["total_forward_backward"] > r["flops"]["total_forward"] > 0
    fast, full = row[256, "boltzmann-fast"]["flops"], row[256, "full"]["flops"]
    assert 0 < fast["attention_forward"] < full["attention_forward"]
    assert 0 < fast["attention_forward_backward"] < full["attention_forward_backward"]
    assert result["command"].startswith("boltzformer bench --preset tiny --sizes 128,256")
    assert result["agreement"][0]["keep_mask_mismatches"] == 0
