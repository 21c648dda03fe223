"""Shared machinery of chromtools' reference models: the peak-count VAE module, training plan, checks.

The two public models (:class:`~chromtools.models.PeakTRVAE` and :class:`~chromtools.models.PeakSCANVI`)
share one :class:`~scvi.module.base.BaseModuleClass`, :class:`PeakVAEModule`, and one model base,
:class:`PeakReferenceModel`, built on scvi-tools' ``BaseModelClass`` + ``ArchesMixin`` so that
``load_query_data`` (architecture surgery) works on them like on any scvi-tools model.

Batch conditioning is a learned vector per batch added to the first layer of the encoder and of
the decoder (equivalent to one-hot batch columns of that layer). Surgery appends one row per new
batch to these matrices; :func:`chromtools.models.freeze_for_surgery` then trains those rows only.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from anndata import AnnData
from lightning.pytorch.callbacks import Callback
from scvi import REGISTRY_KEYS
from scvi.model.base import ArchesMixin, BaseModelClass, UnsupervisedTrainingMixin, VAEMixin
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data
from torch import nn
from torch.distributions import Normal

from chromtools.models._distributed import BestWeights, DistributedSafeLogging

logger = logging.getLogger(__name__)

#: Registry keys of the tensors the module reads (scvi-tools' names).
X_KEY = REGISTRY_KEYS.X_KEY
BATCH_KEY = REGISTRY_KEYS.BATCH_KEY
LABELS_KEY = REGISTRY_KEYS.LABELS_KEY

#: Version of the saved-model format. A reference saved with another format is refused on load.
MODEL_FORMAT_VERSION = 1

Likelihood = Literal["bernoulli", "poisson", "nb"]
InputTransform = Literal["tfidf", "log1p", "binary"]
LIKELIHOODS = ("bernoulli", "poisson", "nb")
INPUT_TRANSFORMS = ("tfidf", "log1p", "binary")

# Bandwidths of the multi-scale RBF kernel of trVAE's MMD (squared-distance scales).
_MMD_SCALES = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1, 5, 10, 15, 20, 25, 30, 35, 100, 1e3, 1e4, 1e5, 1e6)


# ----------------------------------------------------------------------------------------------
# input checks
# ----------------------------------------------------------------------------------------------
def _layer_matrix(adata: AnnData, layer: str | None):
    if layer is None:
        return adata.X
    if layer not in adata.layers:
        msg = f"AnnData has no layer '{layer}' (layers: {list(adata.layers)}); pass layer=None to use X."
        raise KeyError(msg)
    return adata.layers[layer]


def check_count_matrix(adata: AnnData, layer: str | None, *, what: str = "data") -> None:
    """Raise a clear error unless ``adata.X``/``layer`` holds non-negative integer counts.

    All reference models of chromtools use count likelihoods (Bernoulli of accessibility,
    Poisson, negative binomial); normalised or log-transformed values would silently train a
    wrong model. A backed or lazily loaded matrix is checked on a sample of row blocks spread
    over the file (about two million values), so the check never loads it whole.
    """
    from chromtools.models._backed import is_lazy_matrix, sample_values

    X = _layer_matrix(adata, layer)
    where = f"layers['{layer}']" if layer is not None else "X"
    if is_lazy_matrix(X):  # backed / lazily loaded: a few row blocks spread over the file
        from chromtools.models._backed import check_rows_readable

        check_rows_readable(X, f"{what}.{where}")
        values = sample_values(X)
    else:
        values = X.data if sp.issparse(X) else np.asarray(X).ravel()
    if values.size > 2_000_000:  # a strided sample is enough to catch normalised data
        values = values[:: values.size // 2_000_000 + 1]
    values = np.asarray(values)
    if values.size and not np.all(np.isfinite(values)):
        msg = f"{what}.{where} contains NaN or infinite values; reference models need raw counts."
        raise ValueError(msg)
    if values.size and values.min() < 0:
        msg = (
            f"{what}.{where} has negative values (min {values.min():.3g}): it is not count data. "
            "Pass raw peak counts (e.g. layer='counts'); count likelihoods cannot model normalised data."
        )
        raise ValueError(msg)
    if values.size and not np.all(values == np.round(values)):
        frac = float(np.mean(values != np.round(values)))
        msg = (
            f"{what}.{where} holds non-integer values ({frac:.0%} of the non-zeros), so it looks normalised "
            "or log-transformed, but the model's likelihood is for counts. Pass raw peak counts "
            "(e.g. layer='counts')."
        )
        raise ValueError(msg)


def compute_idf(X) -> np.ndarray:
    """Inverse document frequency of each peak, ``log(1 + n_cells / (1 + n_cells_open))``.

    A backed or lazily loaded ``X`` is read in row blocks (:mod:`chromtools.models._backed`).
    """
    from chromtools.models._backed import column_open_counts, is_lazy_matrix

    n = X.shape[0]
    if is_lazy_matrix(X):
        n_open = column_open_counts(X)
    elif sp.issparse(X):
        n_open = np.asarray((X > 0).sum(axis=0)).ravel()
    else:
        n_open = (np.asarray(X) > 0).sum(axis=0)
    return np.log1p(n / (1.0 + n_open)).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# module
# ----------------------------------------------------------------------------------------------
class _BatchMLP(nn.Module):
    """MLP whose first layer adds a learned vector per batch (one-hot batch columns, as in scArches).

    Layer norm (no affine parameters) instead of batch norm, so that nothing changes when the
    network is used on a new batch. ``batch_weight`` has one row per batch; surgery appends rows.
    """

    def __init__(self, n_in: int, n_hidden: int, n_batch: int, n_layers: int, dropout_rate: float):
        super().__init__()
        self.first = nn.Linear(n_in, n_hidden)
        self.batch_weight = nn.Parameter(torch.zeros(max(n_batch, 1), n_hidden))
        nn.init.normal_(self.batch_weight, 0.0, 1.0 / math.sqrt(n_in))
        self.rest = nn.ModuleList([nn.Linear(n_hidden, n_hidden) for _ in range(n_layers - 1)])
        self.dropout = nn.Dropout(dropout_rate) if dropout_rate > 0 else nn.Identity()
        self.norm = nn.LayerNorm(n_hidden, elementwise_affine=False)

    def forward(self, x: torch.Tensor, batch_index: torch.Tensor) -> torch.Tensor:
        if x.is_sparse:  # sparse peak input: only the open peaks cost anything
            h = torch.sparse.mm(x, self.first.weight.T) + self.first.bias
        else:
            h = self.first(x)
        h = h + self.batch_weight[batch_index.long().view(-1)]
        h = self.dropout(F.leaky_relu(self.norm(h)))
        for layer in self.rest:
            h = self.dropout(F.leaky_relu(self.norm(layer(h))))
        return h


def _mmd_between_groups(z: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """Sum over pairs of groups present in the minibatch of the (biased) multi-scale RBF MMD."""
    codes, inverse = torch.unique(group.view(-1), return_inverse=True)
    if codes.numel() < 2:
        return z.new_zeros(())
    d2 = torch.cdist(z, z).pow(2)
    K = torch.zeros_like(d2)
    for s in _MMD_SCALES:
        K = K + torch.exp(-d2 / (2.0 * s))
    onehot = F.one_hot(inverse, codes.numel()).to(z.dtype)  # (B, G)
    weights = onehot / onehot.sum(0, keepdim=True)
    S = weights.T @ K @ weights  # mean kernel between groups (G, G)
    diag = torch.diagonal(S)
    mmd = diag[:, None] + diag[None, :] - 2 * S
    return torch.triu(mmd, diagonal=1).sum()


class PeakVAEModule(BaseModuleClass):
    """Variational autoencoder of peak counts with batch conditioning, MMD and label supervision.

    Parameters
    ----------
    n_input
        Number of peaks.
    n_batch
        Number of batches.
    n_labels
        Number of cell-type labels (0: no label supervision).
    n_hidden, n_latent, n_layers
        Width of hidden layers, latent size, hidden layers of encoder and decoder.
    dropout_rate
        Dropout of the encoder's hidden layers (switched off for query surgery).
    likelihood
        ``'bernoulli'``: accessibility (count > 0) with a complementary log-log link,
        ``P(open) = 1 - exp(-d · softmax(decoder))`` where ``d`` is the number of open peaks of the
        cell (a binarised Poisson); ``'poisson'``: counts with rate ``library · softmax``;
        ``'nb'``: negative binomial with one dispersion per peak and batch.
    input_transform
        Encoder input: ``'tfidf'`` (binarised counts, term frequency × the reference's IDF,
        ``log1p(· 1e4)``), ``'log1p'`` (``log1p`` of counts) or ``'binary'``.
    idf
        IDF vector of the reference (``'tfidf'`` only).
    mmd_weight
        Weight of the MMD between the latent codes of different batches in a minibatch (trVAE).
    classification_weight
        Weight of the cross-entropy of the latent classifier on labelled cells.
    label_prior
        Use a Gaussian-mixture prior with one learned component per label (labelled cells use
        their label's component, unlabelled cells the classifier-weighted mixture), so that the
        latent space is organised by cell type and query surgery is pulled towards the labelled
        clusters (scANVI-like).
    input_dropout
        Fraction of a cell's open peaks hidden from the encoder in each training step (the
        decoder still reconstructs all of them): the encoder learns to place a cell from a
        subsample of its reads, as a shallower query would give it. Off in eval mode, so
        surgery and inference see every peak.
    """

    def __init__(
        self,
        n_input: int,
        n_batch: int = 1,
        n_labels: int = 0,
        *,
        n_hidden: int = 256,
        n_latent: int = 16,
        n_layers: int = 1,
        dropout_rate: float = 0.1,
        likelihood: Likelihood = "bernoulli",
        input_transform: InputTransform = "tfidf",
        idf: np.ndarray | None = None,
        mmd_weight: float = 0.0,
        classification_weight: float = 0.0,
        label_prior: bool = False,
        input_dropout: float = 0.0,
    ):
        super().__init__()
        if likelihood not in LIKELIHOODS:
            msg = f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}."
            raise ValueError(msg)
        if input_transform not in INPUT_TRANSFORMS:
            msg = f"input_transform must be one of {INPUT_TRANSFORMS}, got {input_transform!r}."
            raise ValueError(msg)
        self.n_input, self.n_batch, self.n_labels, self.n_latent = n_input, n_batch, n_labels, n_latent
        self.likelihood, self.input_transform = likelihood, input_transform
        self.mmd_weight, self.classification_weight, self.label_prior = mmd_weight, classification_weight, label_prior
        if not 0.0 <= input_dropout < 1.0:
            msg = f"input_dropout must be in [0, 1), got {input_dropout}."
            raise ValueError(msg)
        self.input_dropout = input_dropout
        idf_t = torch.ones(n_input) if idf is None else torch.as_tensor(np.asarray(idf, np.float32))
        self.register_buffer("idf", idf_t)
        self.encoder = _BatchMLP(n_input, n_hidden, n_batch, n_layers, dropout_rate)
        self.z_mean = nn.Linear(n_hidden, n_latent)
        self.z_logvar = nn.Linear(n_hidden, n_latent)
        self.decoder = _BatchMLP(n_latent, n_hidden, n_batch, n_layers, 0.0)
        self.px_logits = nn.Linear(n_hidden, n_input)
        if likelihood == "nb":
            self.px_log_theta = nn.Parameter(torch.zeros(n_input, max(n_batch, 1)))
        if n_labels > 0:
            self.classifier = nn.Linear(n_latent, n_labels)
            if label_prior:
                self.prior_means = nn.Parameter(torch.randn(n_labels, n_latent))

    # -- inference -----------------------------------------------------------------------------
    def _encoder_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_transform == "log1p":
            return torch.log1p(x)
        xb = (x > 0).to(x.dtype)
        if self.input_transform == "binary":
            return xb
        tf = xb / xb.sum(-1, keepdim=True).clamp(min=1.0)
        return torch.log1p(tf * self.idf * 1e4)

    def _sparse_encoder_input(self, rows, cols, vals, n_open, shape) -> torch.Tensor:
        """The encoder input of :meth:`_encoder_input` as a sparse tensor (same values)."""
        if self.input_transform == "log1p":
            v = torch.log1p(vals)
        elif self.input_transform == "binary":
            v = torch.ones_like(vals)
        else:
            v = torch.log1p(self.idf[cols] / n_open.clamp(min=1.0)[rows] * 1e4)
        return torch.sparse_coo_tensor(torch.stack([rows, cols]), v, shape, is_coalesced=True, check_invariants=False)

    def _get_inference_input(self, tensors, **kwargs):
        return {"x": tensors[X_KEY], "batch_index": tensors[BATCH_KEY]}

    @auto_move_data
    def inference(self, x: torch.Tensor, batch_index: torch.Tensor, n_samples: int = 1) -> dict:
        """Posterior of the latent code; ``z`` is a reparameterised sample.

        Peak matrices are sparse (a few % of peaks are open in a cell), so the first encoder
        layer and the likelihood only touch the non-zero entries.
        """
        if x.is_sparse or x.layout != torch.strided:
            x = x.to_dense()
        rows, cols = torch.nonzero(x, as_tuple=True)
        vals = x[rows, cols]
        n_open = torch.bincount(rows, minlength=x.shape[0]).to(x.dtype)
        if self.training and self.input_dropout > 0:
            keep = torch.rand(rows.shape[0], device=x.device) >= self.input_dropout
            r, c, v = rows[keep], cols[keep], vals[keep]
            inp = self._sparse_encoder_input(r, c, v, torch.bincount(r, minlength=x.shape[0]).to(x.dtype), x.shape)
        else:
            inp = self._sparse_encoder_input(rows, cols, vals, n_open, x.shape)
        h = self.encoder(inp, batch_index)
        qz_m = self.z_mean(h)
        qz_v = torch.exp(self.z_logvar(h).clamp(-12.0, 8.0)) + 1e-5
        qz = Normal(qz_m, qz_v.sqrt())
        z = qz.rsample() if n_samples == 1 else qz.rsample((n_samples,))
        library = n_open if self.likelihood == "bernoulli" else x.sum(-1)
        return {
            "z": z,
            "qz": qz,
            "qzm": qz_m,
            "qzv": qz_v,
            "library": library.clamp(min=1.0)[:, None],
            "nonzero": (rows, cols, vals),
        }

    # -- generative ----------------------------------------------------------------------------
    def _get_generative_input(self, tensors, inference_outputs, **kwargs):
        return {
            "z": inference_outputs["z"],
            "library": inference_outputs["library"],
            "batch_index": tensors[BATCH_KEY],
        }

    @auto_move_data
    def generative(self, z: torch.Tensor, library: torch.Tensor, batch_index: torch.Tensor) -> dict:
        """Per-peak logits; the rate is ``library · softmax(logits)``."""
        h = self.decoder(z, batch_index)
        return {"logits": self.px_logits(h), "library": library}

    def _nll_sparse(self, x, logits, library, batch_index, nonzero) -> torch.Tensor:
        """The negative log-likelihood of :meth:`_nll`, touching only the open peaks where possible.

        With ``rate = library · softmax(logits)``, the rates of a cell sum to its library, so the
        zero entries of the Bernoulli (``-rate``) and Poisson (``rate``) terms add up to
        ``library`` minus the rates of the open peaks.
        """
        if self.likelihood == "nb":
            return self._nll(x, F.log_softmax(logits, -1) + torch.log(library), batch_index)
        rows, cols, vals = nonzero
        lse = torch.logsumexp(logits, dim=-1)
        log_rate = logits[rows, cols] - lse[rows] + torch.log(library[:, 0])[rows]
        lib = library[:, 0]
        if self.likelihood == "bernoulli":
            rate = torch.exp(log_rate).clamp(min=1e-8)
            # -[log(1 - e^-r) over open peaks - sum of r over closed peaks] = lib - sum_open [r + log(1 - e^-r)]
            per_open = rate + torch.log(-torch.expm1(-rate))
        else:
            per_open = vals * log_rate - torch.lgamma(vals + 1)
        return lib - torch.zeros_like(lib).index_add(0, rows, per_open)

    def _nll(self, x: torch.Tensor, log_rate: torch.Tensor, batch_index: torch.Tensor) -> torch.Tensor:
        if self.likelihood == "bernoulli":
            rate = torch.exp(log_rate)
            y = (x > 0).to(x.dtype)
            # log P(open) = log(1 - exp(-rate)); log P(closed) = -rate
            log_open = torch.log(-torch.expm1(-rate.clamp(min=1e-8)))
            return -(y * log_open - (1 - y) * rate).sum(-1)
        if self.likelihood == "poisson":
            return -(x * log_rate - torch.exp(log_rate) - torch.lgamma(x + 1)).sum(-1)
        theta = torch.exp(self.px_log_theta[:, batch_index.long().view(-1)].T)
        mu = torch.exp(log_rate)
        log_theta_mu = torch.log(theta + mu + 1e-8)
        ll = (
            theta * (torch.log(theta + 1e-8) - log_theta_mu)
            + x * (log_rate - log_theta_mu)
            + torch.lgamma(x + theta)
            - torch.lgamma(theta)
            - torch.lgamma(x + 1)
        )
        return -ll.sum(-1)

    def _kl(self, qz_m, qz_v, labels: torch.Tensor | None):
        """KL of the posterior to the prior, plus classifier outputs for the label prior."""
        if not (self.label_prior and self.n_labels > 0):
            kl = 0.5 * (qz_v + qz_m.pow(2) - 1.0 - torch.log(qz_v)).sum(-1)
            return kl
        # KL(q || N(m_y, I)) for every label y: (B, n_labels)
        diff = qz_m[:, None, :] - self.prior_means[None, :, :]
        kl_y = 0.5 * (qz_v[:, None, :] + diff.pow(2) - 1.0 - torch.log(qz_v[:, None, :])).sum(-1)
        probs = F.softmax(self.classifier(qz_m), dim=-1)
        log_probs = torch.log(probs + 1e-8)
        kl_unlabelled = (probs * kl_y).sum(-1) + (probs * (log_probs + math.log(self.n_labels))).sum(-1)
        if labels is None:
            return kl_unlabelled
        lab = labels.long().view(-1)
        known = lab < self.n_labels
        kl_labelled = kl_y.gather(1, lab.clamp(max=self.n_labels - 1)[:, None]).squeeze(1)
        return torch.where(known, kl_labelled, kl_unlabelled)

    def loss(self, tensors, inference_outputs, generative_outputs, kl_weight: float = 1.0) -> LossOutput:
        """Negative ELBO (+ MMD between batches, + classification on labelled cells)."""
        x = tensors[X_KEY]
        batch_index = tensors[BATCH_KEY]
        labels = tensors.get(LABELS_KEY) if self.n_labels > 0 else None
        qz_m, qz_v = inference_outputs["qzm"], inference_outputs["qzv"]
        rec = self._nll_sparse(
            x, generative_outputs["logits"], generative_outputs["library"], batch_index, inference_outputs["nonzero"]
        )
        kl = self._kl(qz_m, qz_v, labels)
        loss = (rec + kl_weight * kl).mean()
        extra: dict[str, torch.Tensor] = {}
        if self.mmd_weight > 0:
            mmd = _mmd_between_groups(inference_outputs["z"], batch_index)
            loss = loss + self.mmd_weight * mmd
            extra["mmd"] = mmd.detach()
        out = {"loss": loss, "reconstruction_loss": rec, "kl_local": kl, "extra_metrics": extra}
        if self.n_labels > 0 and labels is not None:
            lab = labels.long().view(-1)
            known = lab < self.n_labels
            logits = self.classifier(qz_m)
            if known.any() and self.classification_weight > 0:
                ce = F.cross_entropy(logits[known], lab[known])
                out["loss"] = out["loss"] + self.classification_weight * ce
                out["classification_loss"] = ce
                out["logits"] = logits[known]
                out["true_labels"] = lab[known][:, None]
        return LossOutput(**out)

    @torch.inference_mode()
    def predict_proba(self, x: torch.Tensor, batch_index: torch.Tensor) -> torch.Tensor:
        """Label probabilities of the latent classifier."""
        qz_m = self.inference(x, batch_index)["qzm"]
        return F.softmax(self.classifier(qz_m), dim=-1)


# ----------------------------------------------------------------------------------------------
# training plan and model base
# ----------------------------------------------------------------------------------------------
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


def _quiet_lightning() -> None:
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _silence_training_warnings():
    ctx = warnings.catch_warnings()
    ctx.__enter__()
    from lightning.pytorch.utilities.warnings import PossibleUserWarning

    warnings.filterwarnings("ignore", category=PossibleUserWarning)
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    return ctx


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


def _seed_everything(seed: int | None) -> None:
    import scvi

    if seed is not None:
        scvi.settings.seed = int(seed)


class PeakReferenceModel(ArchesMixin, VAEMixin, UnsupervisedTrainingMixin, BaseModelClass):
    """Base class of chromtools' reference models (not used directly).

    Adds to scvi-tools' model base: checks of the input data, training defaults chosen on real
    scATAC (early stopping, epochs by data size, KL warm-up), a version gate on load, and a
    stored copy of the reference's latent codes and labels (:meth:`store_reference`) so that a
    saved reference can map and annotate a query without the reference data.
    """

    _module_cls = PeakVAEModule
    _training_plan_cls = PeakTrainingPlan

    def _init_common(self, adata, module_kwargs: dict, n_labels: int) -> None:
        from chromtools import __version__

        n_batch = self.summary_stats.n_batch
        idf = None
        if adata is not None and module_kwargs.get("input_transform", "tfidf") == "tfidf":
            idf = compute_idf(self.adata_manager.get_from_registry(X_KEY))
        self.module = self._module_cls(
            n_input=self.summary_stats.n_vars, n_batch=n_batch, n_labels=n_labels, idf=idf, **module_kwargs
        )
        self.chromtools_version_ = __version__
        self.chromtools_format_ = MODEL_FORMAT_VERSION
        if not hasattr(self, "reference_"):
            self.reference_ = None

    # -- training ------------------------------------------------------------------------------
    def train(
        self,
        max_epochs: int | None = None,
        *,
        lr: float = 3e-3,
        batch_size: int = 256,
        early_stopping: bool = True,
        early_stopping_patience: int = 5,
        early_stopping_monitor: str = "validation_loss",
        n_epochs_kl_warmup: int | None = 10,
        weight_decay: float = 1e-6,
        train_size: float = 0.9,
        accelerator: str = "auto",
        devices: int | str | list[int] = "auto",
        random_state: int | None = 0,
        progress: bool = False,
        plan_kwargs: dict | None = None,
        **trainer_kwargs,
    ):
        """Train the model (train mode, early stopping on the validation loss, best weights kept).

        Parameters
        ----------
        max_epochs
            Upper bound on epochs; default by data size (:func:`default_max_epochs`).
        lr
            Adam learning rate.
        batch_size
            Minibatch size.
        early_stopping
            Stop when the monitored validation metric has not improved for
            ``early_stopping_patience`` epochs, and restore the best epoch's weights.
        early_stopping_patience
            Epochs without improvement before stopping.
        early_stopping_monitor
            Validation metric to watch (``'validation_loss'``, ``'elbo_validation'``...); the
            weights of its best epoch are restored at the end.
        n_epochs_kl_warmup
            Epochs over which the KL weight ramps from 0 to 1.
        weight_decay
            Adam's L2 penalty (reference training only; surgery always uses 0).
        train_size
            Fraction of cells used for training; the rest is the validation set.
        accelerator, devices
            Lightning accelerator and devices.
        random_state
            Seed of initialisation, data split and minibatch order.
        progress
            Show Lightning's progress bar.
        plan_kwargs
            Further arguments of :class:`~scvi.train.TrainingPlan`.
        **trainer_kwargs
            Further arguments of :class:`~scvi.train.Trainer`.
        """
        _seed_everything(random_state)
        _quiet_lightning()
        if max_epochs is None:
            max_epochs = default_max_epochs(self.adata.n_obs)
        plan = {"lr": lr, "weight_decay": weight_decay, "n_epochs_kl_warmup": n_epochs_kl_warmup}
        plan.update(plan_kwargs or {})
        callbacks = list(trainer_kwargs.pop("callbacks", []) or [])
        mode = trainer_kwargs.pop("module_mode", "train")
        callbacks.append(ModuleModeCallback(mode))
        if early_stopping and train_size < 1.0:
            from lightning.pytorch.callbacks import EarlyStopping

            callbacks.append(
                EarlyStopping(
                    monitor=early_stopping_monitor, patience=early_stopping_patience, mode="min", verbose=False
                )
            )
            callbacks.append(BestWeights(early_stopping_monitor))
        ctx = _silence_training_warnings()
        import scvi

        verbosity = scvi.settings.verbosity
        scvi.settings.verbosity = logging.WARNING
        try:
            super().train(
                max_epochs=max_epochs,
                accelerator=accelerator,
                devices=devices,
                train_size=train_size,
                batch_size=batch_size,
                early_stopping=False,
                plan_kwargs=plan,
                callbacks=callbacks,
                enable_progress_bar=progress,
                check_val_every_n_epoch=1,
                **trainer_kwargs,
            )
        finally:
            scvi.settings.verbosity = verbosity
            ctx.__exit__(None, None, None)
        self.module.eval()
        return self

    # -- reference store -------------------------------------------------------------------
    def store_reference(
        self, adata: AnnData | None = None, *, obs_keys: Sequence[str] | None = None, batch_size: int = 1024
    ) -> np.ndarray:
        """Keep the reference cells' latent codes and labels inside the model (saved with it).

        A saved reference then annotates a query with :func:`chromtools.tl.transfer_labels`
        without the reference data.

        Parameters
        ----------
        adata
            The reference data (default: the data the model was set up with).
        obs_keys
            ``obs`` columns to keep (default: the labels and batch columns the model was set up with).
        batch_size
            Minibatch size of the encoder pass.

        Returns
        -------
        The latent codes (cells × latent), also in ``model.reference_['latent']``.
        """
        import pandas as pd

        adata = self.adata if adata is None else adata
        latent = self.get_latent_representation(adata, batch_size=batch_size).astype(np.float32)
        if obs_keys is None:
            obs_keys = [k for k in (self._original_key(BATCH_KEY), self._original_key(LABELS_KEY)) if k]
        obs = pd.DataFrame(index=adata.obs_names.copy())
        for k in obs_keys:
            if k not in adata.obs:
                msg = f"obs column '{k}' is not in the reference data; pass obs_keys= with existing columns."
                raise KeyError(msg)
            obs[k] = adata.obs[k].to_numpy()
        self.reference_ = {"latent": latent, "obs": obs}
        return latent

    def _original_key(self, registry_key: str) -> str | None:
        try:
            return self.adata_manager.get_state_registry(registry_key).get("original_key")
        except (KeyError, AttributeError):
            try:
                return self.registry_["field_registries"][registry_key]["state_registry"].get("original_key")
            except KeyError:
                return None

    # -- save / load with a version gate -----------------------------------------------------
    @classmethod
    def _check_saved_version(cls, dir_path: str | os.PathLike, prefix: str | None = None) -> None:
        check_saved_reference(dir_path, prefix=prefix, model_name=cls.__name__)

    @classmethod
    def load(cls, dir_path, adata=None, *, accelerator="auto", device="auto", prefix=None, **kwargs):
        """Load a saved model, refusing one saved by an incompatible chromtools version."""
        cls._check_saved_version(dir_path, prefix)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*no saved anndata.*")
            return super().load(
                str(dir_path), adata=adata, accelerator=accelerator, device=device, prefix=prefix, **kwargs
            )

    @classmethod
    def load_query_data(cls, adata=None, reference_model=None, **kwargs):
        """Architecture surgery (:meth:`scvi.model.base.ArchesMixin.load_query_data`), version-checked."""
        if isinstance(reference_model, str | os.PathLike):
            cls._check_saved_version(reference_model)
            reference_model = str(reference_model)
        return super().load_query_data(adata=adata, reference_model=reference_model, **kwargs)


def read_saved_attributes(dir_path: str | os.PathLike, prefix: str | None = None) -> dict:
    """The ``attr_dict`` of a model saved by scvi-tools' ``save`` (without building the model)."""
    path = os.path.join(str(dir_path), f"{prefix or ''}model.pt")
    if not os.path.exists(path):
        msg = (
            f"'{dir_path}' holds no saved model ({os.path.basename(path)} is missing); pass the folder given to save()."
        )
        raise FileNotFoundError(msg)
    return torch.load(path, map_location="cpu", weights_only=False)["attr_dict"]


def check_saved_reference(dir_path, *, prefix: str | None = None, model_name: str | None = None) -> dict:
    """Refuse a reference saved by an incompatible chromtools version; return its attributes."""
    from chromtools import __version__

    attrs = read_saved_attributes(dir_path, prefix)
    saved_name = attrs.get("registry_", {}).get("model_name")
    if model_name is not None and saved_name is not None and saved_name != model_name:
        msg = f"The reference in '{dir_path}' is a {saved_name}, not a {model_name}; load it with {saved_name}.load()."
        raise ValueError(msg)
    if "chromtools_version_" not in attrs:
        return attrs  # a plain scvi-tools model: nothing chromtools-specific to check
    fmt = attrs.get("chromtools_format_")
    if fmt != MODEL_FORMAT_VERSION:
        msg = (
            f"The reference in '{dir_path}' was saved by chromtools {attrs['chromtools_version_']} "
            f"(model format {fmt}); this chromtools {__version__} reads format {MODEL_FORMAT_VERSION} only. "
            f"Retrain the reference with this version, or map the query with chromtools {attrs['chromtools_version_']}."
        )
        raise ValueError(msg)
    return attrs
