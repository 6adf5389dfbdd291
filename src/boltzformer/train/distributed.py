"""`Cluster`: this process's place in a (possibly single-process) training job.

Under `torchrun` (WORLD_SIZE > 1) `Cluster.start` joins the process group (NCCL on CUDA, gloo
on CPU); alone it is rank 0 of 1 and every collective is the identity.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


def resolve_device(device_pref: str) -> torch.device:
    """The device `train.device` names: "auto" (CUDA when available), "cpu" or "cuda" (this
    process's LOCAL_RANK under torchrun)."""
    use_cuda = device_pref == "cuda" or (device_pref == "auto" and torch.cuda.is_available())
    if device_pref == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda but no CUDA device is available; use cpu")
    if use_cuda:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


@dataclass
class Cluster:
    """This process's rank, the number of processes, its device, and the collectives the
    trainer needs (sums, any, gather, buffer broadcast)."""

    rank: int
    world: int
    device: torch.device
    owns_group: bool  # this process started the group, so it ends it

    @classmethod
    def start(cls, device_pref: str) -> Cluster:
        """Join the job `torchrun` started (if any) on the device `device_pref` asks for
        ("auto": CUDA when available, "cpu", "cuda")."""
        device = resolve_device(device_pref)
        world = int(os.environ.get("WORLD_SIZE", "1"))
        owns = False
        if world > 1 and not dist.is_initialized():
            if device.type == "cuda":
                torch.cuda.set_device(device)
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
            owns = True
        if dist.is_initialized():
            rank, world = dist.get_rank(), dist.get_world_size()
        else:
            rank, world = 0, 1
        return cls(rank, world, device, owns)

    @property
    def main(self) -> bool:
        """Rank 0, the one that writes files."""
        return self.rank == 0

    def stop(self) -> None:
        """Leave the process group if this process started it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def all_sum(self, values: list[float]) -> list[float]:
        """Sum each value over ranks (float64)."""
        t = torch.tensor(values, dtype=torch.float64, device=self._comm_device)
        if self.world > 1:
            dist.all_reduce(t)
        return t.tolist()

    def any(self, flag: bool) -> bool:
        """True on every rank if `flag` is True on any."""
        return self.all_sum([float(flag)])[0] > 0

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order."""
        if self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def broadcast_buffers(self, module: torch.nn.Module) -> None:
        """Give every rank rank 0's buffers. DDP broadcasts them at the start of each forward,
        so the last training forward leaves each rank's BatchNorm statistics its own."""
        if self.world > 1:
            for buffer in module.buffers():
                dist.broadcast(buffer, src=0)

    @property
    def _comm_device(self) -> torch.device:
        # NCCL reduces CUDA tensors; gloo CPU ones.
        return self.device if self.world > 1 and self.device.type == "cuda" else torch.device("cpu")
