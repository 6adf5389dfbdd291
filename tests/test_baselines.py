"""The U-Net expert baseline: channel selection, the per-image multi-target data, the masked
loss, training, checkpoints and scoring with the common evaluator."""

from __future__ import annotations

import importlib
import json
import sys

import pytest
import torch
import torch.nn.functional as F

from boltzformer.baselines import (
    ImageTargets,
    UNetBaselineConfig,
    UNetExpert,
    lr_factor_at,
    masked_dice_bce,
    multilabel_dice_bce,
    train_unet,
)
from boltzformer.data import BiomedParseDataset, random_augment
from boltzformer.evaluation.evaluate import CSV_COLUMNS, evaluate
from boltzformer.inference.windowed import window_settings
from boltzformer.modeling.loss import dice_bce_loss
from boltzformer.train.data import mix_seed, split_by_image

SMALL = {"image_size": 64, "decoder_channels": (32, 16, 16, 8, 8)}


def _model(targets: tuple[str, ...], seed: int = 0) -> UNetExpert:
    torch.manual_seed(seed)
    return UNetExpert(UNetBaselineConfig(targets, **SMALL)).eval()


def _all_targets(root) -> tuple[str, ...]:
    return tuple(sorted({s.target for split in ("train", "test")
                         for s in BiomedParseDataset(root, split).samples}))


def test_forward_selects_each_samples_target_channel() -> None:
    model = _model(("a", "b", "c"))
    head = model.unet.segmentation_head[0]
    with torch.no_grad():  # constant channels -1, 0, 2: the output says which one was taken
        head.weight.zero_()
        head.bias.copy_(torch.tensor([-1.0, 0.0, 2.0]))
    images = torch.rand(3, 3, 64, 64) * 255
    out = model(images, ["?", "?", "?"], targets=["c", "a", "b"])
    assert out.logits.shape == (3, 1, 64, 64) and out.channel_logits.shape == (3, 3, 64, 64)
    assert out.logits[:, 0, 0, 0].tolist() == [2.0, -1.0, 0.0]
    assert torch.equal(out.logits.amin((1, 2, 3)), out.logits.amax((1, 2, 3)))
    # Without targets, canonical prompts name them; the longest fitting name wins.
    by_prompt = model(images, ["c in chest CT", "a", "b in abdomen MRI"])
    assert by_prompt.logits[:, 0, 0, 0].tolist() == [2.0, -1.0, 0.0]


def test_forward_runs_the_unet_once_per_image_for_all_its_targets() -> None:
    model = _model(("a", "b", "c"))
    batch_sizes: list[int] = []
    model.unet.register_forward_hook(lambda _m, args, _out: batch_sizes.append(len(args[0])))
    images = torch.rand(2, 3, 64, 64) * 255
    index = torch.tensor([0, 0, 1, 0])
    with torch.no_grad():
        out = model(images, ["?"] * 4, image_index=index, targets=["a", "c", "b", "b"])
        alone = [model(images[i : i + 1], ["?"], targets=[t]).logits[0]
                 for i, t in zip(index.tolist(), ["a", "c", "b", "b"], strict=True)]
    assert batch_sizes[0] == 2 and out.logits.shape == (4, 1, 64, 64)
    for got, expected in zip(out.logits, alone, strict=True):
        torch.testing.assert_close(got, expected)


def test_forward_takes_the_channel_of_real_weights_and_rejects_unknown_targets() -> None:
    model = _model(("left lung", "lung", "nodule"))
    images = torch.rand(2, 3, 64, 64) * 255
    with torch.no_grad():
        out = model(images, ["left lung in chest CT", "nodule in chest CT"])
        assert torch.equal(out.logits[0, 0], out.channel_logits[0, 0])  # not "lung"
        assert torch.equal(out.logits[1, 0], out.channel_logits[1, 2])
        with pytest.raises(ValueError, match=r"'liver'.*\['left lung', 'lung', 'nodule'\]"):
            model(images, ["x", "y"], targets=["nodule", "liver"])
        with pytest.raises(ValueError, match="pass targets="):
            model(images, ["pulmonary nodule in chest CT", "nodule in chest CT"])
    for bad in ({"targets": ()}, {"targets": ("a", "a")}, {"targets": ("a",), "image_size": 70}):
        with pytest.raises(ValueError):
            UNetBaselineConfig(**bad)


def test_image_targets_hold_every_mask_of_an_image(phantoms) -> None:
    base = BiomedParseDataset(phantoms, "train", image_size=64)
    targets = sorted({s.target for s in base.samples})
    data = ImageTargets(base, range(len(base)), targets)
    images = sorted({s.image_path for s in base.samples})
    assert len(data) == len(images) == 4
    for i, path in enumerate(images):
        item = data[i]
        assert item["image_file"] == path.name
        mine = {s.target: j for j, s in enumerate(base.samples) if s.image_path == path}
        assert {targets[c] for c in item["annotated"].nonzero()[:, 0].tolist()} == set(mine)
        for c, name in enumerate(targets):
            expected = base[mine[name]]["mask"][0] if name in mine else torch.zeros(64, 64)
            assert torch.equal(item["masks"][c], expected), name
        assert torch.equal(item["image"], base[next(iter(mine.values()))]["image"])
    assert not all(data[i]["annotated"].all() for i in range(len(data)))  # chest vs abdomen


@pytest.mark.parametrize("rotations", [True, False])
def test_augmentation_moves_image_and_all_masks_alike(phantoms, rotations) -> None:
    base = BiomedParseDataset(phantoms, "train", image_size=64)
    targets = sorted({s.target for s in base.samples})
    plain = ImageTargets(base, range(len(base)), targets)[0]
    data = ImageTargets(base, range(len(base)), targets, seed=5, augment=True,
                        rotations=rotations)
    moved = 0
    for epoch in range(6):
        data.set_epoch(epoch)
        item = data[0]
        moved += not torch.equal(item["image"], plain["image"])
        for c in plain["annotated"].nonzero()[:, 0].tolist():  # each mask as if augmented alone
            generator = torch.Generator().manual_seed(mix_seed(5, epoch, 0))
            image, mask = random_augment(plain["image"], plain["masks"][c : c + 1], generator,
                                         rotate=rotations)
            assert torch.equal(image, item["image"]) and torch.equal(mask[0], item["masks"][c])
    assert moved >= 2


def test_loss_ignores_unannotated_channels() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    masks = (torch.rand(2, 3, 8, 8) > 0.5).float()
    annotated = torch.tensor([[True, False, True], [False, True, False]])
    loss = masked_dice_bce(logits, masks, annotated)
    pairs = [(0, 0), (0, 2), (1, 1)]
    by_hand = dice_bce_loss(torch.stack([logits[b, c] for b, c in pairs])[:, None],
                            torch.stack([masks[b, c] for b, c in pairs])[:, None])
    assert torch.allclose(loss, by_hand)
    loss.backward()
    assert (logits.grad[~annotated] == 0).all() and (logits.grad[annotated] != 0).any()
    garbage_masks = masks.clone()
    garbage_masks[~annotated] = 1 - garbage_masks[~annotated]
    garbage_logits = logits.detach().clone()
    garbage_logits[~annotated] = 50.0
    assert torch.equal(masked_dice_bce(garbage_logits, garbage_masks, annotated), loss.detach())
    assert not torch.allclose(masked_dice_bce(garbage_logits, garbage_masks,
                                              torch.ones_like(annotated)), loss.detach())


def test_batch_dice_is_one_dice_per_target_over_the_annotated_images() -> None:
    """nnU-Net's batch Dice: a slice with a 2-pixel lesion weighs as its pixels do, not as a
    whole Dice of its own; unannotated pairs take no part, in the Dice or the BCE."""
    torch.manual_seed(0)
    logits = torch.randn(3, 2, 8, 8, requires_grad=True)
    masks = torch.zeros(3, 2, 8, 8)
    masks[0, 0, :4] = 1
    masks[1, 0, 0, :2] = 1  # a 2-pixel lesion
    masks[2, 1, 2:6, 2:6] = 1
    annotated = torch.tensor([[True, True], [True, False], [False, True]])
    loss = masked_dice_bce(logits, masks, annotated, dice="batch")
    p = logits.sigmoid()
    dices = []
    for c, rows in ((0, [0, 1]), (1, [0, 2])):
        inter = sum((p[b, c] * masks[b, c]).sum() for b in rows)
        total = sum((p[b, c] + masks[b, c]).sum() for b in rows)
        dices.append(1 - (2 * inter + 1) / (total + 1))
    bce = F.binary_cross_entropy_with_logits(logits[annotated], masks[annotated])
    assert torch.allclose(loss, bce + torch.stack(dices).mean())
    assert not torch.allclose(loss, masked_dice_bce(logits, masks, annotated))
    loss.backward()
    assert (logits.grad[~annotated] == 0).all()
    full = multilabel_dice_bce(logits, masks, annotated, dice="batch")
    assert torch.allclose(full, F.binary_cross_entropy_with_logits(logits, masks)
                          + torch.stack(dices).mean())
    with pytest.raises(ValueError, match="dice must be one of"):
        masked_dice_bce(logits, masks, annotated, dice="volume")


def test_multilabel_loss_supervises_unannotated_channels_as_empty() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    masks = (torch.rand(2, 3, 8, 8) > 0.5).float()
    annotated = torch.tensor([[True, False, True], [False, True, False]])
    masks[~annotated] = 0  # as ImageTargets gives them
    loss = multilabel_dice_bce(logits, masks, annotated)
    p = logits.detach().sigmoid()
    bce = -(masks * p.log() + (1 - masks) * (1 - p).log()).mean()  # every channel, every pixel
    dice = {(b, c): 1 - (2 * (p[b, c] * masks[b, c]).sum() + 1)
            / (p[b, c].sum() + masks[b, c].sum() + 1) for b in range(2) for c in range(3)}
    by_hand = bce + ((dice[0, 0] + dice[0, 2]) / 2 + dice[1, 1]) / 2  # per image, then mean
    assert torch.allclose(loss, by_hand)
    loss.backward()
    assert (logits.grad[~annotated] != 0).all()
    # An unannotated channel that fires everywhere costs more than one that stays off, and
    # only through the BCE: Dice is over the annotated channels alone.
    off, on = logits.detach().clone(), logits.detach().clone()
    off[~annotated], on[~annotated] = -20.0, 20.0
    gap = multilabel_dice_bce(on, masks, annotated) - multilabel_dice_bce(off, masks, annotated)
    bce_gap = (F.binary_cross_entropy_with_logits(on, masks)
               - F.binary_cross_entropy_with_logits(off, masks))
    assert gap > 1 and torch.allclose(gap, bce_gap)
    with pytest.raises(ValueError, match="no annotated channel"):
        multilabel_dice_bce(logits, masks, torch.zeros_like(annotated))


def test_training_defaults_to_a_constant_lr_and_supervise_all_reaches_every_channel(
        phantoms, tmp_path) -> None:
    base = BiomedParseDataset(phantoms, "train")
    targets = tuple(base.target_names)  # every target the data names (its categories too)

    def one_step(name: str, **kwargs) -> tuple[torch.Tensor, float]:
        """Which channels' output biases the first step (one image) moved, and its lr."""
        torch.manual_seed(0)  # train_unet's initialisation
        start = UNetExpert(UNetBaselineConfig(targets, image_size=64)).unet.segmentation_head
        result = train_unet(phantoms, tmp_path / name, steps=1, image_size=64, batch_size=1,
                            weight_decay=0.0, log_every=1, progress=False, **kwargs)
        record = json.loads((tmp_path / name / "metrics.jsonl").read_text().splitlines()[0])
        head = result.model.unet.segmentation_head
        return head[0].bias != start[0].bias, record["lr"]

    masked, lr = one_step("default")
    assert lr == 2e-3  # no warm-up (nor decay): the cosine cost half the small-object Dice
    assert not masked.all()  # the channels of targets the image does not annotate: no loss
    moved, _ = one_step("all", supervise="all")
    assert moved.all()  # every channel learns from the image, annotated or not
    _, warming = one_step("cosine", schedule="cosine")
    assert warming == pytest.approx(0.05 * 2e-3)


def test_training_defaults_to_no_augmentation_and_a_dice_per_pair(phantoms, tmp_path) -> None:
    def weights(name: str, **kwargs) -> dict[str, torch.Tensor]:
        return train_unet(phantoms, tmp_path / name, steps=2, image_size=64, batch_size=3,
                          progress=False, **kwargs).model.state_dict()

    default, plain = weights("d"), weights("p", augment=False)
    augmented = weights("a", augment=True)
    assert all(torch.equal(default[k], plain[k]) for k in default)
    assert not all(torch.equal(default[k], augmented[k]) for k in default)
    batch_dice_weights = weights("b", dice="batch")  # the Dice per target over the batch
    assert not all(torch.equal(default[k], batch_dice_weights[k]) for k in default)


def test_the_expert_trains_in_bf16_and_channels_last_on_request(phantoms, tmp_path) -> None:
    """amp=bf16 runs the U-Net's forward in bfloat16 (a different trajectory from float32),
    channels_last stores its convolutions so; the weights stay float32 and it says which."""
    def run(name: str, **kwargs):
        return train_unet(phantoms, tmp_path / name, steps=2, image_size=64, batch_size=3,
                          progress=False, **kwargs)

    plain, fast = run("f32"), run("bf16", amp="bf16", channels_last=True)
    assert (plain.metrics["amp"], fast.metrics["amp"]) == ("none", "bf16")
    convs = [m.weight for m in fast.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    a, b = plain.model.state_dict(), fast.model.state_dict()
    assert all(b[k].dtype == a[k].dtype for k in a)
    assert not all(torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())
    with pytest.raises(ValueError, match="amp must be none, bf16 or auto"):
        run("f16", amp="fp16")


def test_schedule_warms_up_then_decays() -> None:
    values = [lr_factor_at(i / 100) for i in range(101)]
    assert values[0] == pytest.approx(0.05) and max(values) == pytest.approx(1.0)
    assert values[5] == pytest.approx(1.0) and values[100] == pytest.approx(0.05)
    assert values[:6] == sorted(values[:6]) and values[5:] == sorted(values[5:], reverse=True)


def test_a_few_steps_on_phantoms_reduce_the_loss(phantoms, tmp_path) -> None:
    result = train_unet(phantoms, tmp_path / "run", steps=12, image_size=64, batch_size=3,
                        lr=1e-2, augment=False, log_every=1, progress=False)
    records = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text()
               .splitlines()]
    losses = [r["loss"] for r in records if r["kind"] == "train"]
    assert len(losses) == 12 and records[-1]["kind"] == "end"
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3
    # The trainer's split: the same training images, all their masks, never the validation ones.
    base = BiomedParseDataset(phantoms, "train")
    train_idx, _ = split_by_image(base, 0.2, 0)
    assert result.metrics["train_masks"] == len(train_idx) and result.metrics["train_images"] == 3
    assert result.metrics["targets"] == base.target_names  # one channel per named target
    assert {base.samples[i].target for i in train_idx} <= set(base.target_names)
    assert list(result.model.config.targets) == result.metrics["targets"]
    with pytest.raises(FileExistsError):
        train_unet(phantoms, tmp_path / "run", steps=1, image_size=64, progress=False)
    with pytest.raises(ValueError, match="exactly one budget"):
        train_unet(phantoms, tmp_path / "x", steps=1, minutes=1.0, progress=False)


def test_training_is_deterministic_given_the_seed(phantoms, tmp_path) -> None:
    def run(name: str, seed: int) -> dict[str, torch.Tensor]:
        return train_unet(phantoms, tmp_path / name, steps=3, image_size=64, batch_size=2,
                          seed=seed, progress=False).model.state_dict()

    first, again, other = run("a", 0), run("b", 0), run("c", 1)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first if k in other)


def test_save_and_load_give_identical_logits(tmp_path) -> None:
    model = _model(("liver", "nodule"), seed=3)
    model.save_pretrained(tmp_path / "ckpt")
    loaded = UNetExpert.from_pretrained(tmp_path / "ckpt").eval()
    assert loaded.config == model.config
    images = torch.rand(2, 3, 64, 64) * 255
    with torch.no_grad():
        expected = model(images, ["a", "b"], targets=["nodule", "liver"]).logits
        assert torch.equal(loaded(images, ["a", "b"], targets=["nodule", "liver"]).logits,
                           expected)
    with pytest.raises(FileNotFoundError, match="config.json"):
        UNetExpert.from_pretrained(tmp_path)


def test_broken_checkpoints_are_one_line_errors_naming_the_file(tmp_path) -> None:
    from boltzformer.modeling.checkpoint import CheckpointError

    ckpt = _model(("liver", "nodule")).save_pretrained(tmp_path / "ckpt")
    weights = ckpt / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(CheckpointError, match=str(weights)) as err:
        UNetExpert.from_pretrained(ckpt)
    assert "\n" not in str(err.value)
    weights.write_bytes(good)
    other = ckpt / "config.json"
    other.write_text(other.read_text().replace('"nodule"', '"nodule", "aorta"'))  # 3 channels
    with pytest.raises(CheckpointError, match=str(weights)):
        UNetExpert.from_pretrained(ckpt)
    other.write_text("{not json")
    with pytest.raises(CheckpointError, match=str(other)):
        UNetExpert.from_pretrained(ckpt)


def test_evaluate_scores_every_test_sample_with_its_own_channel(phantoms) -> None:
    model = _model(_all_targets(phantoms))
    head = model.unet.segmentation_head[0]
    n = len(model.config.targets)
    with torch.no_grad():  # odd channels predict every pixel, even ones none
        head.weight.zero_()
        head.bias.copy_(torch.tensor([5.0 if c % 2 else -5.0 for c in range(n)]))
    test = BiomedParseDataset(phantoms, "test", image_size=64)
    result = evaluate(model, test, batch_size=5, progress=False)
    assert len(result.samples) == len(test)
    assert all(set(CSV_COLUMNS) <= set(row) for row in result.samples)
    assert {"small", "large", "all"} <= set(result.metrics["size_strata"]["weighted"])
    expected = [64 * 64 * (model.config.targets.index(s.target) % 2) for s in test.samples]
    assert [row["pred_pixels"] for row in result.samples] == expected
    assert 0 < expected.count(0) < len(expected)


def test_missing_package_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "segmentation_models_pytorch", None)  # as if absent
    for name in [m for m in sys.modules if m.startswith("boltzformer.baselines")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(ImportError, match=r"pip install 'boltzformer\[baselines\]'"):
        importlib.import_module("boltzformer.baselines")


def test_a_windowed_expert_answers_each_image_in_windows_at_its_own_size(phantoms) -> None:
    targets = _all_targets(phantoms)
    torch.manual_seed(0)
    model = UNetExpert(UNetBaselineConfig(targets, **SMALL, window_size=64)).eval()
    head = model.unet.segmentation_head[0]
    with torch.no_grad():  # odd channels predict every pixel, even ones none
        head.weight.zero_()
        head.bias.copy_(torch.tensor([5.0 if c % 2 else -5.0 for c in range(len(targets))]))
    seen: list[tuple[int, ...]] = []
    model.unet.register_forward_hook(lambda _m, args, _o: seen.append(tuple(args[0].shape)))
    test = BiomedParseDataset(phantoms, "test", image_size=None)  # 96 x 96
    result = evaluate(model, test, progress=False, windows=window_settings(model.config))
    expected = [96 * 96 * (targets.index(s.target) % 2) for s in test.samples]
    assert [row["pred_pixels"] for row in result.samples] == expected
    images = len({s.image_file for s in test.samples})
    assert seen == [(4, 3, 64, 64)] * images  # 4 windows of 64 px, one batch per image
