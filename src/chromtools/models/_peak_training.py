"""Training of the reference models: the training plan, the module-mode callback and the epoch budget."""

from __future__ import annotations

from typing import Literal

import torch
from lightning.pytorch.callbacks import Callback

from chromtools.models._distributed import DistributedSafeLogging
from chromtools.models._peak_vae import BATCH_KEY, LABELS_KEY, X_KEY


class ModuleModeCallback(Callback):
    """Lightning callback that puts the module in train (reference) or eval (surgery) mode.

    Lightning 2.6 trains a module in whatever mode it is in when ``fit`` starts, and scvi-tools
    leaves modules in eval mode after loading and after training. Reference training must run in
    train mode (dropout on); query surgery runs in eval mode (dropout frozen, batch-norm
    statistics of scvi-tools models fixed) so that only the new batch parameters can change.
    """

    def __init__(self, mode: Literal["train", "eval"]):
        super().__init__()
        self.mode = mode

    def _apply(self, pl_module) -> None:
        module = getattr(pl_module, "module", pl_module)
        module.train(self.mode == "train")

    def on_train_start(self, trainer, pl_module):
        """Set the mode when training starts."""
        self._apply(pl_module)

    def on_train_epoch_start(self, trainer, pl_module):
        """Set the mode again at every epoch (validation switches modules to eval)."""
        self._apply(pl_module)


class PeakTrainingPlan(DistributedSafeLogging):
    """scvi-tools' :class:`~scvi.train.TrainingPlan`, also logging the classifier's accuracy."""

    def validation_step(self, batch, batch_idx):
        """Validation step that also logs the label accuracy of semi-supervised models."""
        super().validation_step(batch, batch_idx)
        module = self.module
        if getattr(module, "n_labels", 0) > 0 and LABELS_KEY in batch:
            labels = batch[LABELS_KEY].long().view(-1)
            known = labels < module.n_labels
            if known.any():
                with torch.no_grad():
                    qz_m = module.inference(batch[X_KEY], batch[BATCH_KEY])["qzm"]
                    acc = (module.classifier(qz_m).argmax(-1)[known] == labels[known]).float().mean()
                self.log("accuracy_validation", acc, on_epoch=True, batch_size=int(known.sum()))


def trained_epochs(model) -> int:
    """Number of epochs a model (chromtools or scvi-tools) was trained for, from its history."""
    hist = getattr(model, "history", None) or {}
    for key in ("elbo_train", "train_loss", "train_loss_epoch"):
        if key in hist:
            return len(hist[key])
    return 0


def default_max_epochs(n_obs: int, *, cap: int = 200, floor: int = 20) -> int:
    """Epoch budget by data size: about 1.5 million cell passes, between ``floor`` and ``cap``."""
    return int(min(cap, max(floor, round(1_500_000 / max(n_obs, 1)))))
