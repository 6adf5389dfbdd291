"""Checkpoints on the Hugging Face Hub, offline: a Hub cache laid out in tmp_path as
huggingface_hub writes it (`models--org--name/{blobs,snapshots/<commit>,refs/main}`, checked
with its own `scan_cache_dir`), loaded by id with HF_HUB_OFFLINE / local_files_only; the
model card; `push_to_hub` and `boltzformer push-to-hub` with the Hub client replaced by a
recorder of what would be uploaded."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest
import torch
from conftest import SMALL_MODEL
from huggingface_hub import scan_cache_dir
from huggingface_hub.errors import LocalTokenNotFoundError
from huggingface_hub.file_download import repo_folder_name
from PIL import Image

import boltzformer
from boltzformer import Predictor, cli
from boltzformer.evaluation.calibrate import write_calibration
from boltzformer.modeling import hub
from boltzformer.modeling.checkpoint import CheckpointError
from boltzformer.modeling.model_card import CardFacts
from boltzformer.modeling.size_floor import SizeFloor
from boltzformer.train.config import TrainConfig
from boltzformer.train.publish import card_facts
from boltzformer.train.run_dir import resolve_checkpoint

COMMIT = "0123456789abcdef0123456789abcdef01234567"
LABELS = ("nodule", "left kidney", "liver")


def put_in_cache(cache: Path, repo_id: str, folder: Path, *, commit: str = COMMIT,
                 refs: tuple[str, ...] = ("main",)) -> Path:
    """Lay `folder`'s files out in Hub cache `cache` as repository `repo_id` at `commit`
    (blobs named by their hash, snapshot links to them, `refs/<ref>` naming the commit), as
    `hf_hub_download` leaves them; the snapshot folder."""
    repo = cache / repo_folder_name(repo_id=repo_id, repo_type="model")
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True)
    for path in folder.iterdir():
        blob = repo / "blobs" / hashlib.sha256(path.read_bytes()).hexdigest()
        shutil.copyfile(path, blob)
        (snapshot / path.name).symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir(exist_ok=True)
    for ref in refs:
        (repo / "refs" / ref).write_text(commit)
    return snapshot


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """A small closed-vocabulary BoltzFormer saved locally (full attention: deterministic)."""
    torch.manual_seed(0)
    overrides = {k: v for k, v in SMALL_MODEL.items() if k != "preset"}
    model = boltzformer.build_model("tiny", **overrides, attention="full",
                                    text_encoder="labels", text_labels=LABELS)
    return model.save_pretrained(tmp_path_factory.mktemp("local") / "ckpt")


@pytest.fixture
def cache(tmp_path, saved) -> Path:
    """A Hub cache holding `saved` as lab/small (refs main and v1)."""
    cache = tmp_path / "hub-cache"
    put_in_cache(cache, "lab/small", saved, refs=("main", "v1"))
    return cache


@pytest.fixture
def offline(monkeypatch, cache) -> Path:
    """HF_HUB_OFFLINE=1 and HF_HUB_CACHE=`cache` for this process (huggingface_hub reads
    both at import: its constants are set as the variables would have set them)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def _logits(model, prompts=("nodule", "liver")) -> torch.Tensor:
    torch.manual_seed(1)
    images = torch.rand(1, 3, 64, 64) * 255
    with torch.no_grad():
        return model(images.expand(len(prompts), -1, -1, -1), list(prompts)).logits


# --- ids ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "parsed"), [
    ("lab/small", ("lab/small", None)),
    ("my-lab/boltz.former_v2@v1.0", ("my-lab/boltz.former_v2", "v1.0")),
    ("lab/small@" + COMMIT, ("lab/small", COMMIT)),
    ("small", None), ("/abs/small", None), ("./lab/small", None), ("runs/tiny/best", None),
    ("../small", None), ("lab--x/small", None), ("lab/small-", None), ("lab/", None),
])
def test_what_reads_as_a_hub_id(text, parsed):
    assert hub.parse_hub_id(text) == parsed


def test_the_cache_layout_is_what_huggingface_hub_reads(cache):
    (repo,) = scan_cache_dir(cache).repos
    assert repo.repo_id == "lab/small" and repo.repo_type == "model"
    (revision,) = repo.revisions
    assert revision.commit_hash == COMMIT and revision.refs == {"main", "v1"}
    assert {f.file_name for f in revision.files} == {"config.json", "model.safetensors",
                                                     "README.md"}


# --- loading by id --------------------------------------------------------------------------
def test_boltzformer_from_a_hub_id_is_the_saved_model(saved, cache):
    local = boltzformer.BoltzFormer.from_pretrained(saved).eval()
    remote = boltzformer.BoltzFormer.from_pretrained(
        "lab/small", cache_dir=cache, local_files_only=True).eval()
    assert remote.config == local.config
    torch.testing.assert_close(_logits(remote), _logits(local), rtol=0, atol=0)
    # a revision: a keyword, or the id's @ suffix
    tagged = boltzformer.BoltzFormer.from_pretrained(
        "lab/small@v1", cache_dir=cache, local_files_only=True)
    same = boltzformer.BoltzFormer.from_pretrained(
        "lab/small", revision=COMMIT, cache_dir=cache, local_files_only=True)
    for other in (tagged, same):
        for key, value in local.state_dict().items():
            assert torch.equal(other.state_dict()[key], value), key


def test_hf_hub_offline_loads_from_the_default_cache(offline, saved):
    predictor = Predictor.from_pretrained("lab/small")
    local = Predictor.from_pretrained(saved)
    image = (np.random.default_rng(0).random((80, 70)) * 255).astype(np.uint8)
    predictor.set_image(image)
    local.set_image(image)
    got, want = predictor.predict(["nodule", "liver"]), local.predict(["nodule", "liver"])
    np.testing.assert_array_equal(got.prob, want.prob)
    assert got.prob.shape == (2, 80, 70)


def test_a_local_folder_wins_over_a_hub_id(tmp_path, saved, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(saved, tmp_path / "lab" / "small")
    assert hub.model_folder("lab/small", local_files_only=True) == Path("lab/small")
    boltzformer.BoltzFormer.from_pretrained("lab/small", local_files_only=True)


@pytest.mark.parametrize(("name", "kwargs", "says"), [
    ("lab/missing", {}, "lab/missing: no such local folder, and not in the Hugging Face Hub "
     "cache"),
    ("lab/small", {"revision": "v9"}, "lab/small@v9: no such local folder, and not in the"),
])
def test_what_cannot_be_had_offline_is_one_line(cache, name, kwargs, says):
    with pytest.raises(CheckpointError) as err:
        boltzformer.BoltzFormer.from_pretrained(name, cache_dir=cache, local_files_only=True,
                                                **kwargs)
    assert says in _one_line(err)


def test_a_hub_repository_that_is_not_a_checkpoint_is_refused(tmp_path, saved):
    cache, partial = tmp_path / "cache", tmp_path / "partial"
    partial.mkdir()
    shutil.copy(saved / "config.json", partial)
    put_in_cache(cache, "lab/config-only", partial)
    with pytest.raises(CheckpointError) as err:
        boltzformer.BoltzFormer.from_pretrained("lab/config-only", cache_dir=cache,
                                                local_files_only=True)
    assert "has no model.safetensors, so it is not a boltzformer checkpoint" in _one_line(err)


def test_unet_expert_from_a_hub_id(tmp_path):
    pytest.importorskip("segmentation_models_pytorch")
    from boltzformer.baselines import UNetBaselineConfig, UNetExpert

    torch.manual_seed(0)
    model = UNetExpert(UNetBaselineConfig(("nodule", "liver"), image_size=64,
                                          decoder_channels=(32, 16, 16, 8, 8))).eval()
    saved = model.save_pretrained(tmp_path / "unet")
    card = (saved / "README.md").read_text()
    assert "`nodule`, `liver`" in card and "UNetExpert.from_pretrained" in card
    cache = tmp_path / "cache"
    put_in_cache(cache, "lab/unet", saved)
    loaded = UNetExpert.from_pretrained("lab/unet", cache_dir=cache, local_files_only=True)
    torch.testing.assert_close(_logits(loaded.eval()), _logits(model), rtol=0, atol=0)


def test_cli_predict_takes_a_hub_id(offline, saved, tmp_path):
    image = tmp_path / "scan.png"
    Image.fromarray((np.random.default_rng(0).random((48, 40)) * 255).astype(np.uint8)).save(
        image)
    outs = {}
    for name, checkpoint in (("hub", "lab/small"), ("local", str(saved))):
        outs[name] = tmp_path / name
        argv = ["predict", "--checkpoint", checkpoint, "--input", str(image),
                "--prompt", "nodule", "--out", str(outs[name])]
        assert cli.main(argv) == 0
    assert resolve_checkpoint(Path("lab/small")) == offline / "models--lab--small" / \
        "snapshots" / COMMIT
    got = np.asarray(Image.open(outs["hub"] / "nodule_prob.png"))
    np.testing.assert_array_equal(got, np.asarray(Image.open(outs["local"] / "nodule_prob.png")))


def test_cli_with_a_missing_id_offline_is_one_line(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "empty"),
           "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, "-m", "boltzformer", "predict", "--checkpoint", "lab/nothing",
         "--input", str(tmp_path / "x.png"), "--prompt", "nodule", "--out", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("boltzformer predict: error: lab/nothing: no such local "
                                  "folder, and not in the Hugging Face Hub cache")


# --- the model card -------------------------------------------------------------------------
def test_save_pretrained_writes_a_card_with_the_vocabulary(saved):
    card = (saved / "README.md").read_text()
    header = card.split("---")[1]
    for line in ("library_name: boltzformer", "license: mit",
                 "pipeline_tag: image-segmentation", "- image-segmentation"):
        assert line in header.splitlines()
    assert "It answers only these 3 target names, one at a time" in card
    assert "`nodule`, `left kidney`, `liver`" in card
    # nothing known of its training or figures: said, not invented
    assert "## Training\n\nNot recorded with this checkpoint" in card
    assert "No evaluation figures were given" in card
    assert 'Predictor.from_pretrained("path/to/checkpoint")' in card


def test_the_card_quotes_the_facts_it_is_given(tmp_path):
    model = boltzformer.build_model("tiny", image_size=64, backbone="mobilenetv3_small_050")
    facts = CardFacts(repo_id="lab/m", license="apache-2.0", trained_on="phantoms",
                      training=(("steps in the run", "120"),),
                      figures=(("Dice (mean over present targets)", "0.8123"),),
                      figures_source="Measured by `boltzformer evaluate` on phantoms.")
    card = (model.save_pretrained(tmp_path, card=facts) / "README.md").read_text()
    assert "license: apache-2.0" in card and "# lab/m" in card
    assert "| data | phantoms |" in card and "| steps in the run | 120 |" in card
    assert "| Dice (mean over present targets) | 0.8123 |" in card
    assert "No evaluation figures" not in card and "Not recorded" not in card
    assert "boltzformer predict --checkpoint lab/m" in card
    assert "Open: any text prompt" in card  # the builtin text encoder


def _run_folder(root: Path, saved: Path) -> Path:
    """A run folder as `boltzformer train` leaves it: config.yaml, metrics.jsonl, best/."""
    run = root / "run"
    run.mkdir()
    TrainConfig.from_dict({"data": {"root": str(root / "lung-nodules")}}).to_yaml(
        run / "config.yaml")
    records = [{"kind": "train", "epoch": 1, "step": 10},
               {"kind": "val", "epoch": 1, "step": 10, "val_dice": 0.5, "best": True},
               {"kind": "val", "epoch": 2, "step": 20, "val_dice": 0.61, "best": True},
               {"kind": "val", "epoch": 3, "step": 30, "val_dice": 0.55, "best": False}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    shutil.copytree(saved, run / "best")
    return run


def test_card_facts_come_from_the_run_and_its_evaluation(tmp_path, saved):
    run = _run_folder(tmp_path, saved)
    report = tmp_path / "report"
    report.mkdir()
    (report / "metrics.json").write_text(json.dumps({
        "seed": 0, "threshold": 0.5, "data": "data/lung-nodules", "split": "test",
        "n_samples": 40, "overall": {"dice_mean": 0.7312, "failure_rate": 0.05},
        "size_strata": {"weighted": {"small": {"dice_mean": 0.6}, "tiny": {"dice_mean": None},
                                     "large": {"dice_mean": float("nan")}}},
        "by_target": {"nodule": {"dice_mean": 0.7}},
    }))
    facts = card_facts(run / "best", metrics=report)
    assert facts.trained_on == "lung-nodules"
    training = dict(facts.training)
    assert training["checkpoint"] == "best/ at step 20, epoch 2"
    assert training["validation Dice"] == "0.6100" and training["steps in the run"] == "30"
    figures = dict(facts.figures)
    assert figures["samples"] == "40" and figures["Dice (mean over present targets)"] == "0.7312"
    assert figures["Dice, small objects"] == "0.6000" and figures["Dice, nodule"] == "0.7000"
    assert "Dice, tiny objects" not in figures and "Dice, large objects" not in figures
    assert "on data/lung-nodules, split test" in (facts.figures_source or "")
    # a checkpoint without its run or an evaluation: nothing to say
    bare = card_facts(saved)
    assert bare.trained_on is None and not bare.training and not bare.figures


def test_calibrating_rewrites_the_card_from_the_new_config(tmp_path, saved):
    run = _run_folder(tmp_path, saved)
    model = boltzformer.build_model("tiny", **{k: v for k, v in SMALL_MODEL.items()
                                               if k != "preset"})
    model.save_pretrained(run / "best")  # an open-vocabulary model in the run's best/
    before = (run / "best" / "README.md").read_text()
    assert "| size floor | off |" in before and "calibrated for" not in before
    write_calibration(run / "best", SizeFloor({"nodule": 0.001, "liver": 0.05}, 0.5))
    card = (run / "best" / "README.md").read_text()
    assert "| size floor | 2 targets, fraction 0.5 |" in card
    assert "Targets it was calibrated for: `liver`, `nodule`." in card
    assert "| data | lung-nodules |" in card  # and what its run says


# --- pushing --------------------------------------------------------------------------------
class FakeHub:
    """Stands in for `HfApi`: records the calls and keeps a copy of the uploaded folder."""

    calls: list[tuple[str, dict]] = []
    uploaded: Path

    def __init__(self, token=None, library_name=None):
        self.calls.append(("init", {"token": token}))

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        return huggingface_hub.RepoUrl(f"https://huggingface.co/{repo_id}")

    def create_branch(self, repo_id, **kwargs):
        self.calls.append(("create_branch", {"repo_id": repo_id, **kwargs}))

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        self.calls.append(("upload_folder", {"repo_id": repo_id, **kwargs}))
        shutil.copytree(folder_path, FakeHub.uploaded)
        return type("Commit", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/1"})


@pytest.fixture
def fake_hub(monkeypatch, tmp_path) -> type[FakeHub]:
    FakeHub.calls = []
    FakeHub.uploaded = tmp_path / "uploaded"
    monkeypatch.setattr(hub, "HfApi", FakeHub)
    return FakeHub


def test_push_to_hub_uploads_what_loads_back(fake_hub, saved, tmp_path):
    model = boltzformer.BoltzFormer.from_pretrained(saved).eval()
    url = model.push_to_hub("lab/pushed", private=True, revision="dev")
    assert url == "https://huggingface.co/lab/pushed/commit/1"
    names = [name for name, _ in fake_hub.calls]
    assert names == ["init", "create_repo", "create_branch", "upload_folder"]
    assert fake_hub.calls[1][1] == {"repo_id": "lab/pushed", "private": True, "exist_ok": True}
    assert fake_hub.calls[3][1]["revision"] == "dev"
    assert sorted(p.name for p in fake_hub.uploaded.iterdir()) == [
        "README.md", "config.json", "model.safetensors"]
    assert 'Predictor.from_pretrained("lab/pushed")' in (
        fake_hub.uploaded / "README.md").read_text()
    cache = tmp_path / "cache"
    put_in_cache(cache, "lab/pushed", fake_hub.uploaded)
    back = boltzformer.BoltzFormer.from_pretrained("lab/pushed", cache_dir=cache,
                                                   local_files_only=True).eval()
    torch.testing.assert_close(_logits(back), _logits(model), rtol=0, atol=0)


def test_cli_push_to_hub_sends_the_run_with_its_card(fake_hub, saved, tmp_path, capsys):
    run = _run_folder(tmp_path, saved)
    assert cli.main(["push-to-hub", str(run), "lab/from-cli", "--private",
                     "--license", "cc-by-nc-4.0"]) == 0
    assert "lab/from-cli: https://huggingface.co/lab/from-cli/commit/1" in capsys.readouterr().out
    card = (fake_hub.uploaded / "README.md").read_text()
    assert "license: cc-by-nc-4.0" in card and "| data | lung-nodules |" in card
    assert "| checkpoint | best/ at step 20, epoch 2 |" in card
    assert "No evaluation figures were given" in card  # none beside it, none given
    assert (fake_hub.uploaded / "model.safetensors").read_bytes() == (
        saved / "model.safetensors").read_bytes()


@pytest.mark.parametrize(("argv", "says"), [
    (["not an id"], "'not an id' is not a Hub repository id"),
    (["lab/x", "--metrics", "nowhere.json"], "nowhere.json: no such file"),
])
def test_cli_push_to_hub_refuses_in_one_line(fake_hub, saved, argv, says, capsys):
    assert cli.main(["push-to-hub", str(saved), *argv]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err
    assert not any(name == "upload_folder" for name, _ in fake_hub.calls)


def test_a_refused_upload_is_one_line(fake_hub, saved, monkeypatch, capsys):
    def refuse(self, repo_id, **kwargs):
        raise LocalTokenNotFoundError("Token is required (`token=True`), but no token found.\n"
                                      "You need to log in.")

    monkeypatch.setattr(FakeHub, "create_repo", refuse)
    with pytest.raises(hub.HubUploadError) as err:
        boltzformer.BoltzFormer.from_pretrained(saved).push_to_hub("lab/x")
    assert "cannot upload to the Hugging Face Hub repository lab/x (Token is required" in (
        _one_line(err))
    assert cli.main(["push-to-hub", str(saved), "lab/x"]) == 1
    assert capsys.readouterr().err.count("\n") == 1
