"""`boltzformer convert-release`: release-format weights -> a checkpoint folder, or one line."""

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from boltzformer import BoltzFormer
from boltzformer.cli import main

FIXTURE = Path(__file__).parent / "fixtures" / "release_parity.safetensors"
# the fixture's sizes, on the tiny preset (whose backbone has other channels)
SIZES = ["hidden_dim=32", "mask_dim=32", "num_heads=4", "ffn_dim=64", "num_queries=3",
         "pixel_decoder_layers=2", "image_size=64"]


def _release() -> dict[str, torch.Tensor]:
    return {k.removeprefix("release."): v for k, v in load_file(str(FIXTURE)).items()
            if k.startswith("release.")}


def test_release_weights_become_a_loadable_checkpoint(tmp_path, capsys):
    release = _release()
    # The backbone-facing convolutions take the tiny backbone's channels (resnet10t).
    torch.manual_seed(0)
    pd = "sem_seg_head.pixel_decoder."
    for name, channels in (("adapter_1", 64), ("adapter_2", 128), ("adapter_3", 256),
                           ("input_proj", 512)):
        w = release[f"{pd}{name}.weight"]
        release[f"{pd}{name}.weight"] = torch.randn(w.shape[0], channels, 1, 1)
    release["sem_seg_head.predictor.language_encoder.lang_proj"] = torch.zeros(4, 4)
    save_file(release, str(tmp_path / "release.safetensors"))

    assert main(["convert-release", str(tmp_path / "release.safetensors"), str(tmp_path / "out"),
                 "--preset", "tiny", "--set", *SIZES]) == 0
    assert "not converted: 1 tensor(s) (first sem_seg_head.predictor.language_encoder" in \
        capsys.readouterr().out
    model = BoltzFormer.from_pretrained(tmp_path / "out")
    assert torch.equal(model.decoder.query_pos.weight,
                       release["sem_seg_head.predictor.query_embed.weight"])
    in_proj = release["sem_seg_head.predictor.transformer_cross_attention_layers.8."
                      "multihead_attn.in_proj_weight"]
    assert torch.equal(model.decoder.cross[8].attn.v_proj.weight, in_proj[64:])
    assert torch.equal(model.pixel_decoder.top[0][1].weight,
                       release[f"{pd}layer_4.norm.weight"])
    assert torch.equal(model.pigma.up.weight, release["output_deconv.weight"])


def test_weights_that_do_not_fit_are_one_line_errors(tmp_path, capsys):
    save_file(_release(), str(tmp_path / "release.safetensors"))
    assert main(["convert-release", str(tmp_path / "release.safetensors"), str(tmp_path / "a"),
                 "--preset", "tiny"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "do not fit this model configuration" in err
    assert "differ in shape" in err

    save_file({"backbone.conv.weight": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    assert main(["convert-release", str(tmp_path / "other.safetensors"), str(tmp_path / "b"),
                 "--preset", "tiny"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no tensor of the release's" in err

    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    assert main(["convert-release", str(tmp_path / "junk.pt"), str(tmp_path / "c")]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "not a readable checkpoint" in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()
