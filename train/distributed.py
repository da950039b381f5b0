"""Training across processes: BatchNorm statistics and loss sums over torchrun's ranks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn


class AllReduceBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d with statistics over all processes, for backends without SyncBatchNorm.

    torch's SyncBatchNorm only runs on GPUs; this one runs anywhere (gloo on CPU) through
    the differentiable all-reduce of ``torch.distributed.nn``, so N processes normalise a
    batch exactly as one process does. Same parameters and buffers as BatchNorm2d.
    """

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W)
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        dims = (0, 2, 3)
        count = all_reduce(x.new_tensor([x.numel() / x.shape[1]]))
        mean = all_reduce(x.sum(dims)) / count
        # Two passes (mean, then squared deviations) for the precision of a local BN.
        var = all_reduce((x - mean[None, :, None, None]).square().sum(dims)) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = (
                    self.momentum
                    if self.momentum is not None
                    else 1.0 / float(self.num_batches_tracked)
                )
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), m)
                unbiased = var.detach() * count / (count - 1).clamp_min(1)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), m)
        scale = torch.rsqrt(var + self.eps)
        y = (x - mean[None, :, None, None]) * scale[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y


def convert_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Make every BatchNorm2d synchronise its statistics across processes.

    Args:
        module: the network (changed in place where possible).
        device: CUDA uses torch's SyncBatchNorm, anything else :class:`AllReduceBatchNorm2d`.

    Returns:
        The converted module.
    """
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for child in module.children():
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, AllReduceBatchNorm2d):
            child.__class__ = AllReduceBatchNorm2d  # same state, synchronised forward
        else:
            convert_batchnorm(child, device)
    return module


def sum_over_ranks(group: Any) -> Callable[[Tensor], Tensor]:
    """An autograd-aware sum over DDP ranks, on its own process group.

    Its backward sums the ranks' (identical) upstream gradients, world_size times the
    gradient of the global loss; DDP's gradient averaging divides that back, so the
    update equals one process's at the same global batch.
    """
    from torch.distributed.nn.functional import all_reduce

    def reduce(stats: Tensor) -> Tensor:
        return all_reduce(stats, op=dist.ReduceOp.SUM, group=group)

    return reduce
