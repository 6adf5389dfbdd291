"""The trainer's pieces on their own: parameter groups, the schedule, one step, the state."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import boltzformer.train.step as step_module
from boltzformer.data import BiomedParseDataset
from boltzformer.modeling.boltzformer import build_model
from boltzformer.modeling.loss import dice_bce_loss
from boltzformer.train import checkpoint as ckpt
from boltzformer.train.config import LoopConfig, OptimConfig, TrainConfig
from boltzformer.train.data import EpochView, collate_groups
from boltzformer.train.optim import build_optimizer, build_scheduler, decay_groups, total_steps
from boltzformer.train.state import TrainState
from boltzformer.train.step import TrainStep


def _lrs(optim: OptimConfig, total: int, steps: int, spent=None) -> list[float]:
    """The learning rate of the first group before each of `steps` steps."""
    weight = nn.Parameter(torch.zeros(2, 2))
    optimizer = torch.optim.AdamW([weight], lr=optim.lr)
    scheduler = build_scheduler(optimizer, optim, total, spent)
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def test_schedule_warms_up_then_follows_a_cosine_over_the_steps() -> None:
    optim = OptimConfig(lr=1.0, warmup_steps=2, min_lr_ratio=0.0)
    # warm-up 1/3, 2/3; then cos over steps 2..6: 1, (1 + cos(pi/4))/2, 1/2, ..., 0
    expected = [1 / 3, 2 / 3, 1.0, (1 + math.sqrt(0.5)) / 2, 0.5, (1 - math.sqrt(0.5)) / 2,
                0.0, 0.0]
    assert _lrs(optim, total=6, steps=8) == pytest.approx(expected)
    constant = OptimConfig(lr=0.5, warmup_steps=1, schedule="constant")
    assert _lrs(constant, total=6, steps=4) == pytest.approx([0.25, 0.5, 0.5, 0.5])


def test_under_a_time_budget_the_decay_follows_the_time_spent() -> None:
    optim = OptimConfig(lr=2.0, warmup_steps=1, min_lr_ratio=0.5)
    spent = iter([0.0, 0.0, 0.5, 1.0, 3.0, 0.0])  # read at construction, then at every step
    # warm-up by steps (1/2 of the rate), then 0.5 + 0.5 * (1 + cos(pi * spent)) / 2
    assert _lrs(optim, total=100, steps=5, spent=lambda: next(spent)) == pytest.approx(
        [1.0, 2.0, 1.5, 1.0, 1.0])


def test_total_steps_is_the_epochs_capped_by_max_steps() -> None:
    assert total_steps(LoopConfig(epochs=3), steps_per_epoch=7) == 21
    assert total_steps(LoopConfig(epochs=3, max_steps=10), steps_per_epoch=7) == 10


def test_weight_decay_spares_biases_and_norms() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    model[1].bias.requires_grad_(False)  # frozen parameters are left out
    decayed, plain = decay_groups(model, 0.1)
    assert [p.shape for p in decayed["params"]] == [(4, 3)] and decayed["weight_decay"] == 0.1
    assert [p.shape for p in plain["params"]] == [(4,), (4,)] and plain["weight_decay"] == 0.0
    optimizer = build_optimizer(model, OptimConfig(lr=0.01, beta1=0.8, beta2=0.9))
    assert [g["lr"] for g in optimizer.param_groups] == [0.01, 0.01]
    assert optimizer.param_groups[0]["betas"] == (0.8, 0.9)
    assert optimizer.defaults["fused"]  # PyTorch's fused AdamW kernel on the CPU


def _step_for(phantoms, small_model, loss_weight: float = 1.0, amp: str = "none",
              channels_last: bool = False, **loss):
    model = build_model("tiny", **small_model).train()
    cfg = TrainConfig().with_overrides({"loss.weight": loss_weight, "optim.warmup_steps": 0,
                                        "train.amp": amp, "train.channels_last": channels_last,
                                        **{f"loss.{k}": v for k, v in loss.items()}})
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, total=10)
    step = TrainStep(model, optimizer, scheduler, cfg, torch.device("cpu"),
                     torch.Generator().manual_seed(0))
    base = BiomedParseDataset(phantoms, "train", image_size=small_model["image_size"])
    view = EpochView(base, range(len(base)), seed=0, augment=False, prompts_per_image=3)
    return model, step, collate_groups([view[0], view[1]])


def test_a_step_updates_the_model_and_advances_the_schedule(phantoms, small_model) -> None:
    model, step, batch = _step_for(phantoms, small_model)
    before = [p.detach().clone() for p in model.parameters()]
    result = step(batch)
    assert result.loss is not None and result.loss > 0 and result.non_finite is None
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert step.scheduler.last_epoch == 1


@pytest.mark.parametrize(("amp", "dtype"), [("none", torch.float32), ("bf16", torch.bfloat16)])
def test_bf16_autocast_trains_on_the_cpu(phantoms, small_model, amp, dtype) -> None:
    """train.amp=bf16 runs the forward pass's matrix products in bfloat16 on the CPU (AMX
    where the CPU has it) and still takes a finite float32 step."""
    model, step, batch = _step_for(phantoms, small_model, amp=amp)
    seen = []
    model.pixel_decoder.register_forward_hook(lambda m, i, o: seen.append(
        next(t for t in (o if isinstance(o, (tuple, list)) else [o]) if torch.is_tensor(t))))
    before = [p.detach().clone() for p in model.parameters()]
    result = step(batch)
    assert seen and seen[0].dtype == dtype
    assert result.loss is not None and math.isfinite(result.loss)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_absent_targets_can_be_left_to_the_existence_head(phantoms, small_model,
                                                         monkeypatch) -> None:
    """loss.absent_masks=false: a pair whose mask is empty trains the head, not the masks;
    the mask loss is that of the present pairs alone."""
    model, step, batch = _step_for(phantoms, {**small_model, "existence_head": True},
                                   absent_masks=False)
    batch["mask"][0] = 0  # one absent pair at least
    real, seen = step_module.training_loss, []

    def spy(logits, masks, *args, **kwargs):
        seen.append(masks.clone())
        return real(logits, masks, *args, **kwargs)

    monkeypatch.setattr(step_module, "training_loss", spy)
    assert step(batch).loss is not None
    present = batch["mask"].flatten(1).amax(1) > 0.5
    assert len(seen) == 1 and torch.equal(seen[0], batch["mask"][present])
    assert 0 < int(present.sum()) < batch["mask"].shape[0]
    with pytest.raises(ValueError, match="existence_head=true"):
        _step_for(phantoms, small_model, absent_masks=False)


def test_a_non_finite_loss_leaves_the_model_untouched(phantoms, small_model) -> None:
    model, step, batch = _step_for(phantoms, small_model, loss_weight=math.inf)
    before = [p.detach().clone() for p in model.parameters()]
    result = step(batch)
    assert result.loss is None and result.non_finite == "loss" and not math.isfinite(result.value)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert all(p.grad is None for p in model.parameters())
    assert step.scheduler.last_epoch == 0


@pytest.mark.parametrize("pool", [1, 2])
def test_the_step_honours_loss_layer_pool_and_reports_the_final_term(
        phantoms, small_model, monkeypatch, pool) -> None:
    seen = []

    def spy(logits, mask, layers, **kw):
        seen.append((layers[0].shape[-2:], float(dice_bce_loss(logits.detach(), mask))))
        return real(logits, mask, layers, **kw)

    real = step_module.training_loss
    monkeypatch.setattr(step_module, "training_loss", spy)
    model, step, batch = _step_for(phantoms, small_model, layer_pool=pool)
    result = step(batch)
    semantic = small_model["image_size"] // 4  # S at stride 4
    [(size, final)] = seen
    assert tuple(size) == (semantic // pool, semantic // pool)
    assert result.final_loss == pytest.approx(final, rel=1e-5)
    assert result.loss > result.final_loss  # the deep supervision term comes on top
    with pytest.raises(ValueError, match="loss.layer_pool must be >= 1"):
        TrainConfig().with_overrides({"loss.layer_pool": 0})


def test_amp_auto_takes_bf16_only_where_the_hardware_has_it(monkeypatch) -> None:
    cpu = torch.device("cpu")
    assert step_module.resolve_amp("none", cpu) == "none"
    assert step_module.resolve_amp("bf16", cpu) == "bf16"
    monkeypatch.setattr(step_module, "native_bf16", lambda device: True)
    assert step_module.resolve_amp("auto", cpu) == "bf16"
    monkeypatch.setattr(step_module, "native_bf16", lambda device: False)
    assert step_module.resolve_amp("auto", cpu) == "none"
    # the CPU test reads torch's capability probes; without them it says no
    monkeypatch.undo()
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    assert not step_module.native_bf16(cpu)


def test_channels_last_trains_the_same_function(phantoms, small_model) -> None:
    """train.channels_last changes the layout of the convolutions' weights and inputs, not
    what is computed: the same loss to float32 rounding."""
    losses = []
    for channels_last in (False, True):
        torch.manual_seed(0)
        model, step, batch = _step_for(phantoms, small_model, channels_last=channels_last)
        convs = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]
        layout = torch.channels_last if channels_last else torch.contiguous_format
        assert convs and all(w.is_contiguous(memory_format=layout) for w in convs)
        assert channels_last == any(not w.is_contiguous() for w in convs)
        losses.append(step(batch).loss)
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)


def test_fp16_needs_cuda() -> None:
    cfg = TrainConfig().with_overrides({"train.amp": "fp16"})
    weight = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([weight])
    with pytest.raises(ValueError, match="train.amp=fp16 needs a CUDA device"):
        TrainStep(nn.Linear(1, 1), optimizer, build_scheduler(optimizer, cfg.optim, 1), cfg,
                  torch.device("cpu"), torch.Generator())


def test_state_round_trips_through_a_checkpoint(tmp_path, small_model) -> None:
    state = TrainState(epoch=3, batch=2, step=40, skipped_steps=1, best_epoch=None,
                       epoch_loss_sum=1.25, epoch_batches=2, records=7, world_size=2,
                       seconds=12.5)
    assert state.best_val_loss == math.inf  # nothing validated yet
    ckpt.save_checkpoint(tmp_path / "last", build_model("tiny", **small_model),
                         {"progress": state.to_dict()})
    back = TrainState.from_dict(ckpt.load_state(tmp_path / "last")["progress"])
    assert back == state
    with pytest.raises(ValueError, match="unknown training progress key.*valid keys are"):
        TrainState.from_dict({"epoch": 1, "epochs": 2})


def test_an_epoch_counts_towards_patience_unless_it_improved() -> None:
    state = TrainState(epoch=1, batch=5, bad_epochs=1, epoch_loss_sum=3.0, epoch_batches=5)
    state.complete_epoch(improved=False)
    assert (state.epoch, state.batch, state.bad_epochs) == (2, 0, 2)
    assert (state.epoch_loss_sum, state.epoch_batches) == (0.0, 0)
    state.complete_epoch(improved=True)
    assert (state.epoch, state.bad_epochs) == (3, 0)


def test_eta_times_the_steps_after_the_first_and_says_when_a_step_budget_ends():
    """The ETA leaves the first steps (start-up) out of its rate and prints one line."""
    from boltzformer.train.eta import Eta

    clock = iter([100.0, 104.0])  # at step 5 (after start-up), then at step 25
    eta = Eta(0, 1000, None, lambda: next(clock), quiet=True, skip=5, measure=20)
    for step in range(1, 30):
        eta.step(step)
    assert eta.line == "step 25 of 1000, 0.20 s a step: training ends in about 3.2 min"
    clock = iter([0.0, 40.0])  # a 1-minute budget ends before the steps do
    both = Eta(0, 1000, 1.0, lambda: next(clock), quiet=True, skip=5, measure=20)
    for step in range(1, 26):
        both.step(step)
    assert both.line is not None and both.line.endswith("ends in about 0.3 min")
