"""The main job end to end (`boltzformer demo`) and the paper-comparison study, in small."""

import json
from pathlib import Path

import pytest

import boltzformer.baselines as baselines
from boltzformer.apps import demo as demo_app
from boltzformer.apps.demo import TRAINING, DemoSettings, run_demo
from boltzformer.apps.study import TABLES, StudySettings, Variant, cell_config, plan
from boltzformer.cli import build_parser, main
from boltzformer.commands import demo as demo_command
from boltzformer.commands import study as study_command
from boltzformer.data import BiomedParseDataset, generate_phantoms
from boltzformer.train.config import TrainConfig


def test_demo_writes_report_and_figures_beside_the_experts(tmp_path):
    out = tmp_path / "demo"
    training = TRAINING.with_overrides({"train.max_minutes": 0.05, "model.image_size": 96,
                                        "data.workers": 0})
    result = run_demo(DemoSettings(out_dir=out, images=12, training=training, progress=False,
                                   expert=True))
    for name in ("report.md", "predictions.png", "sampling.png", "loss_curve.png",
                 "dice_vs_size.png", "metrics.json", "per_sample.csv"):
        assert (out / name).is_file(), name
    report = (out / "report.md").read_text()
    assert "# BoltzFormer demo" in report and "small" in report
    # the command that reproduces it names the absent-target switches, defaults or not
    assert "--images 12 --absent-share 0.5 --negatives 2 --existence-head" in report
    precision = "bfloat16" if result["train"]["amp"] == "bf16" else "float32"
    assert f"prompts each, {precision})" in report  # what train.amp=auto ran as
    assert "![Boltzmann sampling across layers](sampling.png)" in report
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_samples"] == result["metrics"]["n_samples"] > 0
    assert (out / "run" / "last" / "model.safetensors").is_file()
    # --expert: the U-Net trained for the same minutes, scored alike, side by side
    assert "Against the U-Net expert" in report and "| U-Net expert |" in report
    assert "| small | tiny | large |" in report and "## Objects" in report
    assert result["headline"].startswith("small objects ") and "(tiny " in result["headline"]
    assert "(tiny " in result["expert_headline"]
    expert = json.loads((out / "expert" / "metrics.json").read_text())
    assert expert["n_present"] == result["metrics"]["n_present"] and "grounding" in expert
    assert result["expert"]["n_samples"] == result["metrics"]["n_samples"]
    # the size floor, chosen on the validation items for both models and saved with them;
    # BoltzFormer's existence threshold with it (a table of its own)
    assert "## The existence threshold and size floor" in report
    assert report.count("(chosen)") == 3 and "| existence threshold |" in report
    best = out / "run" / ("best" if (out / "run" / "best").is_dir() else "last")
    for checkpoint in (best, out / "expert" / "model"):
        config = json.loads((checkpoint / "config.json").read_text())
        assert config["size_floors"] and config["size_floor_fraction"] >= 0
    threshold = json.loads((best / "config.json").read_text())["existence_threshold"]
    assert f"an answer below {threshold:g} is an empty mask" in report
    assert "size_floor_fraction" in metrics


def test_demo_trains_and_tests_on_a_users_folder(tmp_path, capsys):
    """--data: a BiomedParse-layout folder instead of the phantoms; no phantoms are drawn."""
    data = tmp_path / "mine"
    generate_phantoms(data, images=12, size=96, seed=1, progress=False)
    (data / "val").mkdir()  # an extra split does not get in the way
    out = tmp_path / "bench"
    training = TRAINING.with_overrides({"train.max_minutes": 0.03, "model.image_size": 96,
                                        "data.workers": 0})
    result = run_demo(DemoSettings(out_dir=out, data=data, training=training, progress=False))
    test_items = len(BiomedParseDataset(data, "test", image_size=96, train=False))
    assert result["metrics"]["n_samples"] == test_items > 0
    assert not (out / "data").exists()
    assert f"--data {data}" in (out / "report.md").read_text()
    # a folder without a test split: one line, exit 1
    (tmp_path / "half" / "train_mask").mkdir(parents=True)
    (tmp_path / "half" / "train").mkdir()
    assert main(["demo", "--data", str(tmp_path / "half"), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert "missing: test" in err and len(err.splitlines()) == 1


def test_demo_on_large_images_trains_on_crops_and_scores_with_windows(tmp_path):
    """Images larger than the model's input: the plan trains both models on crops at native
    size, and the test split is scored at the images' own size through windows."""
    data = tmp_path / "large"
    generate_phantoms(data, images=10, size=128, seed=2, progress=False)
    out = tmp_path / "demo"
    training = TRAINING.with_overrides({"train.max_steps": 2, "train.max_minutes": None,
                                        "model.image_size": 64, "data.workers": 0})
    result = run_demo(DemoSettings(out_dir=out, data=data, training=training, expert=True,
                                   progress=False))
    assert "crop_size: 64" in (out / "run" / "config.yaml").read_text()
    for checkpoint in (out / "run" / "last", out / "expert" / "model"):
        assert json.loads((checkpoint / "config.json").read_text())["window_size"] == 64
    for metrics in (out / "metrics.json", out / "expert" / "metrics.json"):
        assert json.loads(metrics.read_text())["window_size"] == 64
    assert result["metrics"]["n_samples"] == len(BiomedParseDataset(data, "test")) > 0


def test_study_plan_shares_the_default_run_across_tables():
    cells = plan(StudySettings(out_dir=None))
    keys = {(v.key, seed) for _, v, seed in cells}
    # every table is there, with 3 seeds for the main ones and 1 for the ablations
    assert {t.name for t, _, _ in cells} == {t.name for t in TABLES}
    assert sum(1 for t, v, _ in cells if t.name == "table3_attention") == 9
    assert sum(1 for t, v, _ in cells if t.name == "table4_tau0") == 4
    assert sum(1 for t, v, _ in cells if t.name == "deep_supervision") == 9
    # the default Boltzmann model appears in every table but is one run per seed
    assert ("boltzmann", 0) in keys and len(keys) < len(cells)
    assert len(keys) == 37  # the full study's runs
    # the recipe's switches are training overrides; the expert is its own run
    assert ("loss.deep_supervision=False", 2) in keys and ("unet-expert", 2) in keys
    assert ("train.prompts_per_image=1", 0) in keys
    assert ("text_encoder=labels", 1) in keys  # the reading-free row of the text control


def test_quick_study_writes_every_table_and_resumes(tmp_path, capsys):
    out = tmp_path / "study"
    assert main(["study", str(out), "--quick"]) == 0
    for table in TABLES:
        md = (out / f"{table.name}.md").read_text()
        assert all(v.label in md for v in table.variants), table.name
        assert (out / f"{table.name}.csv").is_file()
    assert (out / "study.png").is_file() and "date:" in (out / "summary.md").read_text()
    results = sorted((out / "runs").glob("*/result.json"))
    assert any("constant-prompt" in p.parent.name for p in results)
    stamps = {p: p.stat().st_mtime_ns for p in results}
    assert main(["study", str(out), "--quick"]) == 0  # finished runs are not redone
    assert {p: p.stat().st_mtime_ns for p in results} == stamps


def test_parallel_jobs_give_the_same_runs_as_one_at_a_time(tmp_path):
    """--jobs trains cells in separate processes; each run is still its own seeded run."""
    one, two = tmp_path / "one", tmp_path / "two"
    args = ["--quick", "--tables", "table3_attention"]
    assert main(["study", str(one), *args]) == 0
    assert main(["study", str(two), *args, "--jobs", "2"]) == 0

    def read(out):
        return {p.parent.name: json.loads(p.read_text())
                for p in (out / "runs").glob("*/result.json")}

    serial, parallel = read(one), read(two)
    assert set(serial) == set(parallel) == {"attention=full-s0", "attention=masked-s0",
                                            "boltzmann-s0"}
    for key in serial:
        for metric in ("small", "large", "all"):
            assert parallel[key][metric] == pytest.approx(serial[key][metric], abs=0.01), key


def test_demo_rejects_bad_settings_before_doing_any_work(tmp_path, capsys):
    out = tmp_path / "demo"
    for flags, message in ((["--image-size", "100"], "image_size must be a multiple of 32"),
                           (["--image-size", "64"], "size must be at least 96"),
                           (["--minutes", "0"], "train.max_minutes must be > 0"),
                           (["--lr", "0"], "optim.lr must be > 0"),
                           (["--prompts-per-image", "0"], "train.prompts_per_image must be >= 1"),
                           (["--images", "9"], "at least 10 images"),
                           (["--absent-share", "1.5"], "absent_share must be in [0, 1]")):
        assert main(["demo", "--out", str(out), *flags]) == 1, flags
        assert message in capsys.readouterr().err, flags
        assert not out.exists(), flags


def test_the_demo_trains_as_before_and_its_flags_override_that_config(tmp_path):
    """The demo's run, written out by hand: tiny at 256 pixels with one token per target
    name, a third of the sampling's draws uniform and initial queries of std 0.02, A.5's
    crops without its rotations, 4 images of up to 8 prompts a step at lr 1e-3 (20 warm-up
    steps), for 700 steps with no early stopping, 5 % of the training images for validation,
    snapshots every 2 minutes; the existence head trained with the decoder on two absent names
    per image, absent pairs to it alone, on phantoms with absent targets."""
    expected = TrainConfig.from_dict({
        "model": {"preset": "tiny", "image_size": 256, "text_encoder": "labels",
                  "sampling_explore": 0.3, "query_init_std": 0.02,
                  "existence_head": True, "existence_detach": False},
        "data": {"root": str(tmp_path), "workers": 2, "val_fraction": 0.05,
                 "rotations": False, "negatives": 2},
        "optim": {"lr": 0.001, "warmup_steps": 20},
        "loss": {"absent_masks": False},
        "train": {"batch_size": 4, "prompts_per_image": 8, "epochs": 100, "patience": None,
                  "max_steps": 700, "seed": 0, "checkpoint_every": 200,
                  "snapshot_minutes": 2, "amp": "auto", "channels_last": True},
    })
    assert DemoSettings().train_config(tmp_path) == expected
    given = demo_command.settings(build_parser().parse_args(["demo"]))
    assert given.train_config(tmp_path) == expected
    assert (given.out_dir, given.images, given.expert) == (Path("demo_output"), 1200, False)
    assert given.absent_share == DemoSettings().absent_share == 0.5
    assert given.size_floor  # calibrated after training unless --no-size-floor
    assert not demo_command.settings(build_parser().parse_args(
        ["demo", "--no-size-floor"])).size_floor
    absent = demo_command.settings(build_parser().parse_args(
        ["demo", "--absent-share", "0.25", "--no-existence-head", "--negatives", "0"]))
    assert absent.absent_share == 0.25
    cfg = absent.train_config(tmp_path)
    assert not cfg.model.resolve().existence_head and cfg.data.negatives == 0
    assert cfg.loss.absent_masks  # without the head, absent prompts teach the masks
    paper = demo_command.settings(build_parser().parse_args(["demo", "--no-existence-head"]))
    assert paper.train_config(tmp_path).data.negatives == 0  # negatives need the head
    chosen = demo_command.settings(build_parser().parse_args(
        ["demo", "--no-existence-head", "--negatives", "1"]))
    assert chosen.train_config(tmp_path).data.negatives == 1

    def budget(*flags: str) -> tuple[int | None, float | None]:
        loop = demo_command.settings(build_parser().parse_args(["demo", *flags])).training.train
        return loop.max_steps, loop.max_minutes

    assert budget("--steps", "50") == (50, None)
    assert budget("--minutes", "2") == (None, 2.0)  # a time budget alone
    assert budget("--steps", "50", "--minutes", "2") == (50, 2.0)  # whichever ends first

    flags = ["demo", "--minutes", "3", "--image-size", "128", "--batch-size", "2",
             "--prompts-per-image", "1", "--lr", "3e-3", "--text-encoder", "builtin",
             "--seed", "5", "--workers", "0", "--images", "50"]
    given = demo_command.settings(build_parser().parse_args(flags))
    assert given.images == 50
    assert given.train_config(tmp_path).to_dict() == {
        "model": {"preset": "tiny", "image_size": 128, "text_encoder": "builtin",
                  "sampling_explore": 0.3, "query_init_std": 0.02,
                  "existence_head": True, "existence_detach": False},
        "data": {**expected.to_dict()["data"], "workers": 0},
        "optim": {**expected.to_dict()["optim"], "lr": 0.003},
        "loss": expected.to_dict()["loss"],
        "train": {**expected.to_dict()["train"], "max_minutes": 3.0, "max_steps": None,
                  "batch_size": 2,
                  "prompts_per_image": 1, "seed": 5},
    }


def test_study_runs_train_as_before_and_the_budget_flags_override_them(tmp_path):
    """Every run: tiny at 128 pixels, 4 images a step at lr 2e-3 (20 warm-up steps, at most a
    tenth of a step budget), 2.5 minutes, no early stopping; the jobs share 2 workers."""
    data = tmp_path / "data"
    full = cell_config(StudySettings(out_dir=tmp_path), data,
                       Variant("full attention", {"attention": "full"}), seed=2)
    assert full == TrainConfig.from_dict({
        "model": {"preset": "tiny", "image_size": 128, "attention": "full"},
        "data": {"root": str(data), "workers": 1, "val_fraction": 0.05},
        "optim": {"lr": 0.002, "warmup_steps": 20},
        "train": {"batch_size": 4, "epochs": 1000, "patience": None, "max_minutes": 2.5,
                  "seed": 2, "checkpoint_every": 200},
    })

    def given(*flags: str) -> StudySettings:
        return study_command.settings(build_parser().parse_args(["study", str(tmp_path),
                                                                 *flags]))

    constant = Variant("constant", constant_prompt=True,
                       training={"train.prompts_per_image": 1})
    assert cell_config(given("--quick"), data, constant, seed=0) == TrainConfig.from_dict({
        "model": {"preset": "tiny", "image_size": 96},
        "data": {"root": str(data), "workers": 0, "val_fraction": 0.05,
                 "prompt": "object in image"},
        "optim": {"lr": 0.002, "warmup_steps": 0},
        "train": {"batch_size": 2, "prompts_per_image": 1, "epochs": 1000, "patience": None,
                  "max_steps": 3, "max_minutes": None, "seed": 0, "checkpoint_every": 200},
    })
    steps = cell_config(given("--steps", "50"), data, Variant("b"), seed=0)
    assert (steps.train.max_steps, steps.train.max_minutes, steps.optim.warmup_steps) == (
        50, None, 5)
    both = given("--steps", "500", "--minutes", "1", "--jobs", "1").training.train
    assert (both.max_steps, both.max_minutes) == (500, 1.0)
    with pytest.raises(ValueError, match="train.max_steps must be > 0"):
        given("--steps", "0")


@pytest.mark.parametrize(("negatives", "supervise"), [(0, "annotated"), (2, "all")])
def test_the_expert_learns_absent_targets_when_boltzformer_does(tmp_path, monkeypatch,
                                                                 negatives, supervise):
    """With data.negatives (complete annotation assumed) the U-Net supervises every channel,
    an unannotated target as empty; without, only the annotated ones."""
    given = {}

    def record(*args, **kwargs):
        given.update(kwargs)
        raise StopIteration  # enough: the call's arguments are what is tested

    monkeypatch.setattr(baselines, "train_unet", record)
    training = TRAINING.with_overrides({"data.negatives": negatives})
    settings = DemoSettings(training=training)
    planned = {"data.crop_size": 0, "data.scale": 1.0, "data.object_crops": 0.5}
    with pytest.raises(StopIteration):
        demo_app._expert(settings, settings.train_config(tmp_path).with_overrides(planned),
                         None, tmp_path / "expert")
    assert given["supervise"] == supervise
    # the same hardware as BoltzFormer's: precision and layout
    assert (given["amp"], given["channels_last"]) == ("auto", True)
    assert given["crops"] is None  # whole images, as the run
    # the run's crops are the expert's, and it predicts on the same windows
    with pytest.raises(StopIteration):
        demo_app._expert(settings, settings.train_config(tmp_path).with_overrides(
            {**planned, "data.crop_size": 128}), None, tmp_path / "expert")
    crops = given["crops"]
    assert (crops.size, crops.scale, crops.object_share, crops.out_size) == (128, 1.0, 0.5, 256)
    assert given["window_overlap"] == 0.5


def test_configs_demo_yaml_is_the_demos_recipe():
    """configs/demo.yaml lets `boltzformer train` run the demo's recipe: it must not drift."""
    path = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
    assert TrainConfig.from_yaml(path) == TRAINING


def test_the_demo_says_when_a_busy_machine_will_slow_its_threads(monkeypatch):
    """Several torch threads on cores that other work keeps busy: one line with the way out;
    a quiet machine or one thread: nothing."""
    from boltzformer.apps import demo as demo_app

    monkeypatch.setattr(demo_app.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(demo_app.torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr(demo_app.os, "getloadavg", lambda: (4.2, 3.0, 2.0))
    note = demo_app.busy_note()
    assert note is not None and "load average 4.2 on 2 cores" in note
    assert "OMP_NUM_THREADS=1" in note
    monkeypatch.setattr(demo_app.os, "getloadavg", lambda: (0.3, 0.2, 0.1))
    assert demo_app.busy_note() is None
    monkeypatch.setattr(demo_app.os, "getloadavg", lambda: (4.2, 3.0, 2.0))
    monkeypatch.setattr(demo_app.torch, "get_num_threads", lambda: 1)
    assert demo_app.busy_note() is None
