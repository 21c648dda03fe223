"""The peak-count VAE module shared by chromtools' reference models (PeakSCANVI, PeakTRVAE).

Batch conditioning is a learned vector per batch added to the first layer of the encoder and of
the decoder (equivalent to one-hot batch columns of that layer). Surgery appends one row per new
batch to these matrices; :func:`chromtools.models.freeze_for_surgery` then trains those rows only.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from scvi import REGISTRY_KEYS
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data
from torch import nn
from torch.distributions import Normal

from chromtools.models._mmd import _mmd_between_groups

#: Registry keys of the tensors the module reads (scvi-tools' names).
X_KEY = REGISTRY_KEYS.X_KEY
BATCH_KEY = REGISTRY_KEYS.BATCH_KEY
LABELS_KEY = REGISTRY_KEYS.LABELS_KEY

Likelihood = Literal["bernoulli", "poisson", "nb"]
InputTransform = Literal["tfidf", "log1p", "binary"]
LIKELIHOODS = ("bernoulli", "poisson", "nb")
INPUT_TRANSFORMS = ("tfidf", "log1p", "binary")


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
