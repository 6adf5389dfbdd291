"""The profile's split of CPU time by model part (apps/profiling.py) and the --profile verbs."""

from __future__ import annotations

import json

import torch
from torch import nn

from boltzformer.apps.profiling import LEAVES, OTHER, model_parts, profile_calls
from boltzformer.cli import main
from boltzformer.modeling.attention import SampledCrossAttention
from boltzformer.modeling.config import get_preset
from boltzformer.modeling.mask_decoder import BoltzFormerDecoder


class _Two(nn.Module):
    """A small layer, then a 16x larger one: their backward times must be told apart."""

    def __init__(self) -> None:
        super().__init__()
        self.small = nn.Linear(64, 64)
        self.large = nn.Linear(64, 1024)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.large(torch.relu(self.small(x)))


def test_backward_time_goes_to_the_part_whose_forward_made_it():
    torch.manual_seed(0)
    model = _Two()
    x = torch.randn(256, 64)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        model(x).square().mean().backward()

    result = profile_calls(step, {model.small: "small", model.large: "large"}, repeats=3)
    seconds = result.seconds
    for part in ("small", "large"):
        assert seconds[(part, "forward")] > 0 and seconds[(part, "backward")] > 0, part
    # the large layer's gradients are 16x the work of the small one's
    assert seconds[("large", "backward")] > seconds[("small", "backward")]
    assert seconds[(LEAVES, "backward")] > 0  # the weights' gradients land in leaves
    assert seconds[(OTHER, "backward")] > 0  # relu, square and mean are in no part
    # the layers' time is mostly in matrix products, which the FLOP counter counts; the
    # leaves' (gradient copies) and the loss's (elementwise) is not
    assert 0 < result.counted[("large", "backward")] <= seconds[("large", "backward")]
    assert result.counted.get((OTHER, "forward"), 0.0) == 0.0


def test_decoder_parts_are_found_in_both_passes():
    config = get_preset("tiny")
    torch.manual_seed(0)
    decoder = BoltzFormerDecoder.from_config(config)
    for layer in decoder.cross:
        assert isinstance(layer.attn, SampledCrossAttention)
        layer.attn.impl = "sparse"
    d, b = config.hidden_dim, 1
    levels = [torch.randn(b, d, s, s, requires_grad=True) for s in (4, 8, 16)]
    semantic = torch.randn(b, config.mask_dim, 32, 32, requires_grad=True)
    text = torch.randn(b, 3, d)
    padding = torch.zeros(b, 3, dtype=torch.bool)

    def step() -> None:
        out = decoder(levels, semantic, text, padding, generator=torch.Generator().manual_seed(0))
        out.query_logits.mean().backward()

    seconds = profile_calls(step, model_parts(decoder), repeats=1).seconds
    for part in ("gathered attention", "folding", "projections"):
        key = f"decoder > cross-attention > {part}"
        assert seconds[(key, "forward")] > 0 and seconds[(key, "backward")] > 0, part
    assert seconds[("decoder > mask logits", "backward")] > 0
    assert seconds[("decoder > sampling", "forward")] > 0
    assert ("decoder > sampling", "backward") not in seconds  # the sampling has no gradient


def test_bench_profile_prints_a_table_per_mode(tmp_path, capsys):
    out = tmp_path / "profile.json"
    code = main(["bench", "--preset", "tiny", "--sizes", "128", "--decoder-only", "--modes",
                 "full,boltzmann-fast", "--repeats", "1", "--warmup", "0", "--profile",
                 "--quiet", "--json", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "decoder 128px, full" in printed and "decoder 128px, boltzmann-fast" in printed
    assert "| decoder > cross-attention > attention |" in printed  # dense SDPA in full
    result = json.loads(out.read_text())
    assert result["command"].endswith("--profile --json " + str(out))
    assert {r["title"].split(",")[1].strip() for r in result["rows"]} == {
        "full", "boltzmann-fast"}


def test_throughput_profile_splits_the_training_step(phantoms, capsys):
    code = main(["throughput", "--data", str(phantoms), "--image-size", "96", "--batch-size",
                 "2", "--prompts-per-image", "2", "--steps", "1", "--warmup", "0",
                 "--profile", "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    for part in ("data loading", "backbone", "pixel decoder", "loss", "optimizer",
                 "decoder > FFN"):
        assert f"| {part} |" in printed, part
