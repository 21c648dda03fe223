"""``VRNN``: a variational recurrent network that embeds each gene's time course (scvi-tools model)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager
from scvi.data.fields import LayerField
from scvi.model.base import BaseModelClass, UnsupervisedTrainingMixin

from chromtools._docs import doc_params
from chromtools._utils import quiet_lightning, seeded
from chromtools.models._vrnn_module import DT_KEY, MASK_KEY, NOISE_KEY, VRNNModule, VRNNTrainingPlan

logger = logging.getLogger(__name__)

#: Training defaults, chosen by measurement on simulated modules and the yeast cell cycle (see benchmarks/vrnn.py).
DEFAULT_EPOCHS = 150
DEFAULT_BATCH_SIZE = 128
DEFAULT_LR = 1e-2
DEFAULT_LR_DECAY = 0.05
DEFAULT_KL_WARMUP = 0.5


class VRNN(UnsupervisedTrainingMixin, BaseModelClass):
    """Variational recurrent network over gene time courses (one observation = one gene).

    A latent dynamical system per gene, read on the common grid of ``T`` time points:

    * transition  h̃_{t-1} = γ(Δt_t) ⊙ h_{t-1},  γ(Δ) = exp(-λ Δ) with learned rates λ > 0, so a
      long gap lets the state fade (GRU-D style decay; the gap is in units of the median gap);
    * prior       p(z_t | z_{<t}) = N(μ_p(h̃_{t-1}), σ²_p(h̃_{t-1}));
    * decoder     p(x_t | z_t, z_{<t}) = N(μ_x(z_t, h̃_{t-1}), σ²_model + s²_t), where ``s²_t``
      is the squared standard error of the measured mean (few or noisy cells weigh less);
    * recurrence  h_t = GRU(φ_z(z_t), h̃_{t-1}) (the latent only: ``x`` never enters it).

    The posterior ``q(z_t | z_{<t}, x_{1:T})`` is a smoothing one: it reads h̃_{t-1} and the state
    of a backward GRU over ``x_t … x_T`` (decayed with the gaps the same way), so every latent sees
    the whole course. Time points where a gene was not measured (``layers['observed'] == 0``) are
    left out of the likelihood (masked, not imputed); their latents follow from the dynamics and
    the neighbours. The KL weight is annealed from 0 to 1. The posterior means of
    ``z_1 … z_T`` are the gene's features (:meth:`get_latent_representation`). The exact maths
    is in :mod:`chromtools.models._vrnn_module`.

    Most users call :func:`chromtools.tl.vrnn_cluster`, which builds the input from cells × genes
    data with :func:`chromtools.pp.timecourse_summary`, trains this model and clusters genes.

    Parameters
    ----------
    adata
        Genes × time points from :func:`chromtools.pp.timecourse_summary`, registered with
        :meth:`setup_anndata`.
    registry
        Used by :meth:`load`; leave it out.
    n_hidden
        Size of the GRU state and of the hidden layers.
    n_latent
        Size of the latent ``z_t`` per time point; features have ``T * n_latent`` columns.
    n_features
        Size of the feature maps of ``x_t`` and ``z_t``.
    use_dt
        Decay the recurrent states with the time gap (``False``: every gap counts as one step;
        an ablation).
    use_noise
        Weight each time point's reconstruction by its standard error (``False``: an ablation).
    random_state
        Seed of the initial weights.

    Examples
    --------
    >>> summary = ct.pp.timecourse_summary(adata, time_key="time")
    >>> ct.models.VRNN.setup_anndata(summary)
    >>> model = ct.models.VRNN(summary)
    >>> model.train()
    >>> features = model.get_latent_representation()
    """

    _module_cls = VRNNModule
    _training_plan_cls = VRNNTrainingPlan

    def __init__(
        self,
        adata: AnnData | None = None,
        registry: dict | None = None,
        *,
        n_hidden: int = 32,
        n_latent: int = 4,
        n_features: int = 16,
        use_dt: bool = True,
        use_noise: bool = True,
        random_state: int | None = 0,
    ):
        super().__init__(adata, registry)
        n_time = int(self.summary_stats.n_vars)
        if n_time < 2:
            msg = f"A VRNN needs at least two time points; the input has {n_time}."
            raise ValueError(msg)
        with seeded(random_state):
            self.module = self._module_cls(
                n_hidden=n_hidden,
                n_latent=n_latent,
                n_features=n_features,
                use_dt=use_dt,
                use_noise=use_noise,
            )
        self.n_time_ = n_time
        self._model_summary_string = (
            f"VRNN(time points={n_time}, n_hidden={n_hidden}, n_latent={n_latent}, use_dt={use_dt}, "
            f"use_noise={use_noise}, parameters={sum(p.numel() for p in self.module.parameters()):,})"
        )
        self.init_params_ = self._get_init_params(locals())

    @classmethod
    def setup_anndata(
        cls,
        adata: AnnData,
        layer: str | None = None,
        *,
        noise_layer: str = "noise",
        dt_layer: str = "dt",
        observed_layer: str = "observed",
        **kwargs,
    ) -> None:
        """Register a genes × time points AnnData.

        Parameters
        ----------
        adata
            Observations are genes, variables are time points in time order (as written by
            :func:`chromtools.pp.timecourse_summary`).
        layer
            Layer with the standardised means; default ``X``.
        noise_layer
            Layer with the squared standard error of each standardised mean (0 where unknown).
        dt_layer
            Layer with the time gap before each time point, in units of the median gap (0 for
            the first time point).
        observed_layer
            Layer with 1 where the gene was measured at the time point and 0 where not (missing
            time points are left out of the likelihood).
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        for name in (noise_layer, dt_layer, observed_layer):
            if name not in adata.layers:
                msg = (
                    f"Layer '{name}' is missing from the genes x time points AnnData (it has {list(adata.layers)}); "
                    "build the input with ct.pp.timecourse_summary(...)."
                )
                raise KeyError(msg)
        fields = [
            LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=False),
            LayerField(NOISE_KEY, noise_layer, is_count_data=False),
            LayerField(DT_KEY, dt_layer, is_count_data=False),
            LayerField(MASK_KEY, observed_layer, is_count_data=False),
        ]
        adata_manager = AnnDataManager(fields=fields, setup_method_args=setup_method_args)
        adata_manager.register_fields(adata, **kwargs)
        cls.register_manager(adata_manager)

    @doc_params
    def train(
        self,
        max_epochs: int = DEFAULT_EPOCHS,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        lr: float = DEFAULT_LR,
        lr_decay: float | None = DEFAULT_LR_DECAY,
        kl_warmup: float = DEFAULT_KL_WARMUP,
        max_kl_weight: float = 1.0,
        accelerator: str = "auto",
        devices: int | list[int] | str = "auto",
        random_state: int | None = 0,
        progress: bool = True,
        cpu_threads: int | None = 1,
        plan_kwargs: dict | None = None,
        **trainer_kwargs,
    ) -> None:
        """Train on every gene (there is no held-out set: the goal is an embedding of these genes).

        Parameters
        ----------
        max_epochs
            Passes over the genes.
        batch_size
            Genes per mini-batch.
        lr
            Adam learning rate.
        lr_decay
            The learning rate follows a cosine from ``lr`` down to ``lr * lr_decay`` at the last
            epoch, which makes runs with different seeds agree; ``None`` keeps it constant.
        kl_warmup
            Fraction of ``max_epochs`` over which the KL weight rises linearly from 0 to
            ``max_kl_weight``.
        max_kl_weight
            Final KL weight β (1: the evidence lower bound).
        {accelerator}
        {devices}
        random_state
            Seed of sampling and mini-batch order. The same seed gives the same result.
        {progress}
        cpu_threads
            Torch threads while training on a CPU (restored afterwards). The network is small, so
            one thread is the fastest, and it cannot be slowed down by other processes competing
            for the cores; ``None`` keeps torch's setting.
        plan_kwargs
            Passed to the training plan (:class:`scvi.train.TrainingPlan`).
        **trainer_kwargs
            Passed to the scvi-tools/Lightning trainer.
        """
        if not 0.0 <= kl_warmup <= 1.0:
            msg = f"kl_warmup is a fraction of max_epochs in [0, 1], got {kl_warmup}."
            raise ValueError(msg)
        quiet_lightning()
        plan = {
            "optimizer": "Adam",
            "lr": lr,
            "weight_decay": 0.0,
            "n_epochs_kl_warmup": max(int(round(kl_warmup * max_epochs)), 0) or None,
            "max_kl_weight": max_kl_weight,
            "lr_decay": lr_decay,
        }
        plan.update(plan_kwargs or {})
        threads = torch.get_num_threads()
        on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
        if cpu_threads is not None and on_cpu:
            torch.set_num_threads(int(cpu_threads))
        try:
            with seeded(random_state):
                super().train(
                    max_epochs=max_epochs,
                    accelerator=accelerator,
                    devices=devices,
                    train_size=1.0,
                    batch_size=batch_size,
                    plan_kwargs=plan,
                    enable_progress_bar=progress,
                    **trainer_kwargs,
                )
        finally:
            torch.set_num_threads(threads)
        self.module.eval()

    def _forward_all(self, adata: AnnData | None, indices: Sequence[int] | None, batch_size: int | None) -> dict:
        adata = self._validate_anndata(adata)
        loader = self._make_data_loader(adata=adata, indices=indices, batch_size=batch_size or 1024, shuffle=False)
        self.module.eval()
        keys = ("qz_m", "qz_v", "h_prev")
        out: dict[str, list[np.ndarray]] = {k: [] for k in (*keys, "px_m", "px_v")}
        with torch.inference_mode():
            for tensors in loader:
                inf = self.module.inference(
                    tensors[REGISTRY_KEYS.X_KEY], tensors[DT_KEY], tensors[NOISE_KEY], tensors[MASK_KEY], use_mean=True
                )
                gen = self.module.generative(inf["z"], inf["h_prev"])
                for k in keys:
                    out[k].append(inf[k].cpu().numpy())
                for k in ("px_m", "px_v"):
                    out[k].append(gen[k].cpu().numpy())
        return {k: np.concatenate(v) for k, v in out.items()}

    def get_latent_representation(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        *,
        flatten: bool = True,
        batch_size: int | None = None,
    ) -> np.ndarray:
        """Posterior means of ``z_1 … z_T`` per gene (the recurrence is fed the means, not samples).

        Parameters
        ----------
        adata
            Genes × time points registered like the training data; default the training data.
        indices
            Genes to embed; default all.
        flatten
            Return ``(genes, T * n_latent)``; ``False`` returns ``(genes, T, n_latent)``.
        batch_size
            Genes per forward pass.
        """
        z = self._forward_all(adata, indices, batch_size)["qz_m"]
        return z.reshape(z.shape[0], -1) if flatten else z

    def get_reconstruction(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        *,
        batch_size: int | None = None,
    ) -> np.ndarray:
        """Decoder means ``E[x_t | z_t, h̃_{t-1}]`` at the posterior means, standardised units ``(genes, T)``.

        Defined at every time point, also where a gene was not measured (the model's estimate there).
        """
        return self._forward_all(adata, indices, batch_size)["px_m"]

    def get_elbo_terms(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        *,
        batch_size: int | None = None,
    ) -> dict[str, np.ndarray]:
        """Per-gene reconstruction negative log-likelihood and KL (β = 1) on the deterministic path."""
        adata = self._validate_anndata(adata)
        loader = self._make_data_loader(adata=adata, indices=indices, batch_size=batch_size or 1024, shuffle=False)
        self.module.eval()
        rec, kl = [], []
        with torch.inference_mode():
            for tensors in loader:
                inf = self.module.inference(
                    tensors[REGISTRY_KEYS.X_KEY], tensors[DT_KEY], tensors[NOISE_KEY], tensors[MASK_KEY], use_mean=True
                )
                gen = self.module.generative(inf["z"], inf["h_prev"])
                out = self.module.loss(tensors, inf, gen, kl_weight=1.0)
                rec.append(out.reconstruction_loss["reconstruction_loss"].cpu().numpy())
                kl.append(out.kl_local["kl_local"].cpu().numpy())
        return {"reconstruction": np.concatenate(rec), "kl": np.concatenate(kl)}

    def get_latent_samples(
        self,
        adata: AnnData | None = None,
        n_samples: int = 50,
        *,
        random_state: int | None = 0,
        batch_size: int | None = None,
    ) -> np.ndarray:
        """Samples of ``z_1 … z_T`` from the posterior (sampled latents fed to the recurrence).

        Returns ``(n_samples, genes, T * n_latent)``, time-major like
        :meth:`get_latent_representation`.
        """
        adata = self._validate_anndata(adata)
        loader = self._make_data_loader(adata=adata, batch_size=batch_size or 1024, shuffle=False)
        self.module.eval()
        out = []
        with seeded(random_state), torch.inference_mode():
            for tensors in loader:
                args = (tensors[REGISTRY_KEYS.X_KEY], tensors[DT_KEY], tensors[NOISE_KEY], tensors[MASK_KEY])
                draws = [self.module.inference(*args)["z"] for _ in range(n_samples)]
                out.append(torch.stack(draws).flatten(2).cpu().numpy())
        return np.concatenate(out, axis=1)
