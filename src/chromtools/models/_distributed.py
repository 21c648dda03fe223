"""What our models need to train with Lightning's distributed strategies (DDP), in one place.

Lightning runs the processes, the gradient all-reduce and the samplers; this module only holds
the three things our own code must do differently under DDP.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.callbacks import Callback
from scvi.train import TrainingPlan


def is_distributed(strategy: Any) -> bool:
    """Whether a Lightning ``strategy`` (name or object) runs several processes with data parallelism."""
    from lightning.pytorch.strategies import DDPStrategy

    if isinstance(strategy, str):
        return "ddp" in strategy
    return isinstance(strategy, DDPStrategy)


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of this process; ``(0, 1)`` outside a distributed run."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def shard_sampler(dataset, *, shuffle: bool, seed: int = 0):
    """A :class:`~torch.utils.data.DistributedSampler` over ``dataset`` in a distributed run, else ``None``.

    Lightning calls its ``set_epoch`` every epoch, so each epoch shuffles differently and every
    process sees a disjoint share of the training windows.
    """
    rank, size = world()
    if size == 1:
        return None
    return torch.utils.data.DistributedSampler(dataset, num_replicas=size, rank=rank, shuffle=shuffle, seed=seed)


class DistributedSafeLogging(TrainingPlan):
    """scvi-tools' training plan with metrics logged outside ``torch.inference_mode``.

    scvi-tools logs the ELBO parts and a module's extra metrics inside ``torch.inference_mode``;
    under DDP, Lightning then all-reduces those values in place outside that mode, which torch
    refuses ("Inplace update to inference tensor outside InferenceMode"). ``no_grad`` is enough here.
    """

    def compute_and_log_metrics(self, loss_output, metrics, mode):
        """Log the ELBO parts and extra metrics (under ``no_grad``, not ``inference_mode``)."""
        with torch.no_grad():
            TrainingPlan.compute_and_log_metrics.__wrapped__(self, loss_output, metrics, mode)


class BestWeights(Callback):
    """Keep, in memory, the module weights of the epoch with the best ``monitor`` value; restore them at the end.

    No files are written, so it is safe under DDP, where every process holds the same weights and
    (with validation on all windows in every process) the same metric; scvi-tools' ``SaveCheckpoint``
    would have every process save the same folder at once.
    """

    def __init__(self, monitor: str, mode: str = "min"):
        super().__init__()
        if mode not in ("min", "max"):
            msg = f"mode must be 'min' or 'max', got {mode!r}."
            raise ValueError(msg)
        self.monitor, self.mode = monitor, mode
        self.best_score: float | None = None
        self.best_epoch: int | None = None
        self._state: dict[str, torch.Tensor] | None = None

    def on_validation_end(self, trainer, pl_module):
        """Copy the weights when the monitored metric improved.

        ``on_validation_end``, like Lightning's ``ModelCheckpoint``: in ``on_validation_epoch_end``
        callbacks run before the module's own hook, so a metric the module logs there (AUPRC) would
        still hold the previous epoch's value.
        """
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.monitor])
        better = self.best_score is None or (value > self.best_score if self.mode == "max" else value < self.best_score)
        if better and value == value:  # NaN never counts as an improvement
            self.best_score, self.best_epoch = value, trainer.current_epoch
            module = getattr(pl_module, "module", pl_module)
            self._state = {k: v.detach().clone() for k, v in module.state_dict().items()}

    def on_train_end(self, trainer, pl_module):
        """Restore the best weights."""
        if self._state is not None:
            getattr(pl_module, "module", pl_module).load_state_dict(self._state)
