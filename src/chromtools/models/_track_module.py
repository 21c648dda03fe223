"""The torch side of the track denoiser: network, multitask loss, and the training plan."""

from __future__ import annotations

import logging
import warnings
from typing import Literal

import numpy as np
import torch
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data
from torch.nn import functional as F

from chromtools.models._distributed import DistributedSafeLogging
from chromtools.models._track_data import MASK_KEY, PEAKS_KEY, TARGET_KEY, X_KEY
from chromtools.models._track_nets import build_network

logger = logging.getLogger(__name__)

#: Name under which validation AUPRC is logged, monitored for early stopping and model choice.
AUPRC_METRIC = "auprc_validation"


def masked_pearson(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Pearson correlation over all masked positions of a batch (flattened, as AtacWorks does)."""
    w = mask / mask.sum().clamp_min(1.0)
    mp = (pred * w).sum()
    mt = (target * w).sum()
    dp, dt = (pred - mp) * mask, (target - mt) * mask
    return (dp * dt).sum() / (torch.sqrt((dp**2).sum() * (dt**2).sum()) + eps)


class TrackDenoiserModule(BaseModuleClass):
    """Network plus multitask loss: AtacWorks' MSE (or Poisson) + (1 - Pearson r), squared errors of the track, peak BCE.

    All regression terms are in depth-normalised units (coverage / mean coverage). AtacWorks' terms
    train the network's own estimate (the context estimate of an anchored network); the squared
    errors of the written track pin it to the clean scale: the linear term weighs the peaks (where
    MSE and Pearson r are decided), the log1p term the background (most bases, and the ranks).

    Parameters
    ----------
    n_channels
        Input channels.
    arch
        ``'default'`` (binned dilated ResNet) or ``'atacworks'``.
    regression_loss
        ``'mse'`` on depth-normalised coverage, ``'mse_log'`` on its log1p, or ``'poisson'``
        negative log-likelihood.
    regression_weight, pearson_weight
        Weights of AtacWorks' regression and ``1 - r`` terms, on the network's own estimate (the
        context estimate of an anchored network, else the track).
    track_weight, log_weight
        Weights of the squared errors of the written track, linear and of log1p.
    peak_weight
        Weight of the peak BCE.
    arch_kwargs
        Passed to the network.
    """

    def __init__(
        self,
        n_channels: int,
        arch: str = "default",
        *,
        regression_loss: Literal["mse", "mse_log", "poisson"] = "mse",
        regression_weight: float = 0.05,
        track_weight: float = 1.0,
        log_weight: float = 1.0,
        pearson_weight: float = 1.0,
        peak_weight: float = 3.0,
        **arch_kwargs,
    ):
        super().__init__()
        if regression_loss not in ("mse", "mse_log", "poisson"):
            msg = f"regression_loss must be 'mse', 'mse_log' or 'poisson', got {regression_loss!r}."
            raise ValueError(msg)
        self.net = build_network(arch, n_channels, **arch_kwargs)
        self.regression_loss = regression_loss
        self.regression_weight = regression_weight
        self.track_weight = track_weight
        self.log_weight = log_weight
        self.pearson_weight = pearson_weight
        self.peak_weight = peak_weight

    def _get_inference_input(self, tensors: dict[str, torch.Tensor], **kwargs) -> dict[str, torch.Tensor]:
        return {"x": tensors[X_KEY]}

    @auto_move_data
    def inference(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run the network: denoised track (normalised units), peak logits and context estimate, per base."""
        out = self.net(x)
        track, logits = out[0], out[1]
        return {"track": track, "logits": logits, "context": out[2] if len(out) > 2 else track}

    def _get_generative_input(self, tensors, inference_outputs, **kwargs) -> dict[str, torch.Tensor]:
        return {k: inference_outputs[k] for k in ("track", "logits", "context")}

    def generative(self, track: torch.Tensor, logits: torch.Tensor, context: torch.Tensor) -> dict[str, torch.Tensor]:
        """Peak probabilities from the logits (the denoised track is already the mean prediction)."""
        return {"track": track, "probs": torch.sigmoid(logits), "logits": logits, "context": context}

    def loss(self, tensors, inference_outputs, generative_outputs) -> LossOutput:
        """Multitask loss over the central, in-chromosome bases of each window."""
        mask = tensors[MASK_KEY]
        target = tensors[TARGET_KEY]
        peaks = tensors[PEAKS_KEY]
        track = generative_outputs["track"]
        logits = generative_outputs["logits"]
        context = generative_outputs["context"]
        n = mask.sum(-1).clamp_min(1.0)
        # AtacWorks' terms on the network's own estimate (the context estimate of an anchored network)
        if self.regression_loss == "mse":
            reg = (((context - target) ** 2) * mask).sum(-1) / n
        elif self.regression_loss == "mse_log":
            reg = (((torch.log1p(context) - torch.log1p(target)) ** 2) * mask).sum(-1) / n
        else:
            reg = ((context - target * torch.log(context + 1e-6)) * mask).sum(-1) / n
        r = masked_pearson(context, target, mask)
        # squared errors of the written track, linear (peaks) and log1p (background): they fix its scale
        mse = (((track - target) ** 2) * mask).sum(-1) / n
        log_mse = (((torch.log1p(track) - torch.log1p(target)) ** 2) * mask).sum(-1) / n
        bce = (F.binary_cross_entropy_with_logits(logits, peaks, reduction="none") * mask).sum(-1) / n
        per_window = (
            self.regression_weight * reg + self.track_weight * mse + self.log_weight * log_mse + self.peak_weight * bce
        )
        total = per_window.mean() + self.pearson_weight * (1.0 - r)
        return LossOutput(
            loss=total,
            reconstruction_loss=per_window,
            n_obs_minibatch=mask.shape[0],
            extra_metrics={
                "regression": reg.mean().detach(),
                "track_mse": mse.mean().detach(),
                "log_mse": log_mse.mean().detach(),
                "bce": bce.mean().detach(),
                "pearson": r.detach(),
            },
        )


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the precision-recall curve (average precision); NaN with a warning for one class."""
    from sklearn.metrics import average_precision_score

    if labels.min() == labels.max():
        warnings.warn(
            "Average precision is undefined when all labels are of one class; returning NaN.",
            RuntimeWarning,
            stacklevel=2,
        )
        return float("nan")
    return float(average_precision_score(labels, scores))


class TrackTrainingPlan(DistributedSafeLogging):
    """scvi-tools training plan that also logs per-base AUPRC of peak calls on the validation windows.

    ``val_stride`` keeps every n-th validation base to bound memory; the AUPRC is computed once
    per epoch over all validation windows, and is what early stopping and model choice monitor.
    """

    def __init__(
        self,
        module: TrackDenoiserModule,
        *,
        val_stride: int = 4,
        log_auprc: bool = True,
        cosine_epochs: int | None = None,
        warmup_epochs: int = 1,
        **kwargs,
    ):
        super().__init__(module, **kwargs)
        self.val_stride = val_stride
        self.log_auprc = log_auprc
        self.cosine_epochs = cosine_epochs
        self.warmup_epochs = warmup_epochs
        self._scores: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []

    def configure_optimizers(self):
        config = super().configure_optimizers()
        if not self.cosine_epochs:
            return config
        optimizer = config["optimizer"] if isinstance(config, dict) else config
        total, warm = max(self.cosine_epochs, 1), max(min(self.warmup_epochs, self.cosine_epochs - 1), 0)

        def factor(epoch: int) -> float:
            # linear warm-up, then cosine decay to 2 % of the learning rate at the last epoch
            if epoch < warm:
                return (epoch + 1) / (warm + 1)
            progress = (epoch - warm) / max(total - warm, 1)
            return 0.02 + 0.98 * 0.5 * (1 + np.cos(np.pi * min(progress, 1.0)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    def on_train_start(self) -> None:
        # A module loaded or trained before is left in eval mode; Lightning 2.6 no longer switches back.
        super().on_train_start()
        self.module.train()

    def validation_step(self, batch, batch_idx):
        _, gen, loss_output = self.forward(batch, loss_kwargs=self.loss_kwargs)
        self.log("validation_loss", loss_output.loss, on_epoch=True, batch_size=loss_output.n_obs_minibatch)
        self.compute_and_log_metrics(loss_output, self.val_metrics, "validation")
        if not self.log_auprc:
            return
        keep = batch[MASK_KEY][:, :: self.val_stride] > 0
        self._scores.append(gen["probs"][:, :: self.val_stride][keep].detach().float().cpu().numpy())
        self._labels.append(batch[PEAKS_KEY][:, :: self.val_stride][keep].detach().cpu().numpy())

    def on_validation_epoch_end(self) -> None:
        if self._scores:
            auprc = average_precision(np.concatenate(self._scores), np.concatenate(self._labels))
            self.log(AUPRC_METRIC, auprc, prog_bar=True)
        self._scores, self._labels = [], []
        super().on_validation_epoch_end()
