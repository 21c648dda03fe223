"""The VRNN network (scvi-tools module) and its training plan.

One observation is one gene; its input is the gene's standardised mean activity at the ``T``
time points, the squared standard error of each mean (same units) and the time gap before each
time point. Per time step ``t`` (Chung et al. 2015, with the decoder kept blind to ``x_t``):

* prior      p(z_t | h_{t-1}, Δt_t)
* posterior  q(z_t | x_t, h_{t-1}, Δt_t)
* decoder    p(x_t | z_t, h_{t-1}, Δt_t) = N(μ_t, σ²_model + se²_t)
* recurrence h_t = GRU([φ_x(x_t), φ_z(z_t), Δt_t], h_{t-1})

The decoder reads the state *before* ``x_t`` entered the recurrence, so ``x_t`` reaches it only
through ``z_t``: reconstruction needs the latent, and the KL term (weight annealed to 1) keeps
the latent honest. The observation variance ``se²_t`` (variance / number of cells) down-weights
time points measured with few or noisy cells.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from scvi import REGISTRY_KEYS
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data
from scvi.train import TrainingPlan
from torch import nn

#: Registry key of the squared standard error of each standardised mean (genes × time points).
NOISE_KEY = "noise"
#: Registry key of the time gap before each time point, in units of the median gap (genes × time points).
DT_KEY = "dt"

_LOG_2PI = math.log(2.0 * math.pi)


def _mlp(n_in: int, n_hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, n_hidden), nn.ELU(), nn.Linear(n_hidden, n_out))


class _StateMLP(nn.Module):
    """Two-layer MLP on ``[inputs, h]`` whose input part is computed for all time points at once.

    Equivalent to an MLP on the concatenation; splitting the first layer keeps only the
    state-dependent product inside the recurrence loop.
    """

    def __init__(self, n_in: int, n_state: int, n_hidden: int, n_out: int):
        super().__init__()
        self.inputs = nn.Linear(n_in, n_hidden) if n_in > 0 else None
        self.state = nn.Linear(n_state, n_hidden, bias=n_in == 0)
        self.out = nn.Sequential(nn.ELU(), nn.Linear(n_hidden, n_out))

    def precompute(self, inputs: torch.Tensor | None) -> torch.Tensor | None:
        return self.inputs(inputs) if self.inputs is not None else None

    def forward(self, pre: torch.Tensor | None, h: torch.Tensor) -> torch.Tensor:
        a = self.state(h)
        return self.out(a if pre is None else a + pre)


def gaussian_kl(m_q: torch.Tensor, v_q: torch.Tensor, m_p: torch.Tensor, v_p: torch.Tensor) -> torch.Tensor:
    """KL(N(m_q, v_q) || N(m_p, v_p)) per element, for diagonal Gaussians given by mean and variance."""
    return 0.5 * (torch.log(v_p) - torch.log(v_q) + (v_q + (m_q - m_p) ** 2) / v_p - 1.0)


class VRNNModule(BaseModuleClass):
    """Variational recurrent network over univariate time courses with uneven time gaps.

    Parameters
    ----------
    n_hidden
        Size of the GRU state and of the hidden layers.
    n_latent
        Size of ``z_t`` at each time point.
    n_features
        Size of the feature maps φ_x(x_t) and φ_z(z_t).
    use_dt
        Feed the time gap to every network. ``False`` treats all gaps as equal steps.
    use_noise
        Add each time point's squared standard error to the decoder variance.
    min_variance
        Floor of every variance (numerical safety).
    """

    def __init__(
        self,
        n_hidden: int = 32,
        n_latent: int = 4,
        n_features: int = 16,
        *,
        use_dt: bool = True,
        use_noise: bool = True,
        recurrence: str = "z",
        min_variance: float = 1e-4,
    ):
        super().__init__()
        if recurrence not in ("z", "xz"):
            msg = f"recurrence must be 'z' or 'xz', got {recurrence!r}."
            raise ValueError(msg)
        self.recurrence = recurrence
        self.n_hidden = n_hidden
        self.n_latent = n_latent
        self.use_dt = use_dt
        self.use_noise = use_noise
        self.min_variance = min_variance
        n_dt = 1 if use_dt else 0
        self.phi_x = nn.Sequential(nn.Linear(1, n_features), nn.ELU())
        self.phi_z = nn.Sequential(nn.Linear(n_latent, n_features), nn.ELU())
        self.prior = _StateMLP(n_dt, n_hidden, n_hidden, 2 * n_latent)
        n_noise = 1 if use_noise else 0
        self.encoder = _StateMLP(n_features + n_noise + n_dt, n_hidden, n_hidden, 2 * n_latent)
        self.decoder = _mlp(n_features + n_hidden + n_dt, n_hidden, 1)
        n_rnn_in = (2 if recurrence == "xz" else 1) * n_features + n_dt
        self.rnn = nn.GRUCell(n_rnn_in, n_hidden)
        self.h0 = nn.Parameter(torch.zeros(n_hidden))
        # Model (biological + technical) variance of a standardised mean, learned; se² is added per time point.
        self.log_var_model = nn.Parameter(torch.tensor(math.log(0.1)))

    # -- helpers -------------------------------------------------------------------------------
    def _dt_input(self, dt: torch.Tensor) -> torch.Tensor:
        """(B, T) gaps in median-gap units → (B, T, 1) network input (log-compressed)."""
        return torch.log1p(dt.clamp_min(0.0)).unsqueeze(-1)

    def _split(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m, raw = out.chunk(2, dim=-1)
        return m, F.softplus(raw) + self.min_variance

    def _cat(self, *parts: torch.Tensor | None) -> torch.Tensor | None:
        parts = [p for p in parts if p is not None]
        return torch.cat(parts, dim=-1) if parts else None

    # -- scvi-tools module API -------------------------------------------------------------------
    def _get_inference_input(self, tensors: dict[str, torch.Tensor], **kwargs) -> dict[str, torch.Tensor]:
        return {"x": tensors[REGISTRY_KEYS.X_KEY], "dt": tensors[DT_KEY], "noise": tensors[NOISE_KEY]}

    @auto_move_data
    def inference(
        self,
        x: torch.Tensor,
        dt: torch.Tensor,
        noise: torch.Tensor | None = None,
        *,
        use_mean: bool = False,
        z: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Run the recurrence over the ``T`` time points.

        Parameters
        ----------
        x
            Standardised means, ``(B, T)``.
        dt
            Time gap before each time point in median-gap units, ``(B, T)`` (0 for the first).
        use_mean
            Feed the posterior means (not samples) into the recurrence: the deterministic path
            used for features and reconstructions.
        z
            Use these latents ``(B, T, n_latent)`` instead of sampling (for checks of the maths).

        Returns
        -------
        ``qz_m``, ``qz_v`` (posterior), ``pz_m``, ``pz_v`` (prior), ``z`` (the latents used),
        ``h_prev`` (the state before each time point, ``(B, T, n_hidden)``) and ``dt``.
        """
        n, T = x.shape
        dtin = self._dt_input(dt) if self.use_dt else None
        if self.use_noise:
            if noise is None:
                msg = "This VRNN weights time points by their uncertainty; pass noise= (squared standard errors)."
                raise ValueError(msg)
            noise_in = torch.log(noise.clamp_min(0.0) + 1e-3).unsqueeze(-1)
        else:
            noise_in = None
        fx_all = self.phi_x(x.unsqueeze(-1))  # (B, T, n_features)
        pre_prior = self.prior.precompute(dtin)
        pre_enc = self.encoder.precompute(self._cat(fx_all, noise_in, dtin))
        h = self.h0.expand(n, -1)
        qm, qv, pm, pv, zs, hs = [], [], [], [], [], []
        for t in range(T):
            d = dtin[:, t] if dtin is not None else None
            m_p, v_p = self._split(self.prior(pre_prior[:, t] if pre_prior is not None else None, h))
            m_q, v_q = self._split(self.encoder(pre_enc[:, t], h))
            if z is not None:
                z_t = z[:, t]
            elif use_mean:
                z_t = m_q
            else:
                z_t = m_q + v_q.sqrt() * torch.randn_like(m_q)
            hs.append(h)
            fx = fx_all[:, t] if self.recurrence == "xz" else None
            h = self.rnn(self._cat(fx, self.phi_z(z_t), d), h)
            qm.append(m_q)
            qv.append(v_q)
            pm.append(m_p)
            pv.append(v_p)
            zs.append(z_t)
        stack = lambda v: torch.stack(v, dim=1)
        return {
            "qz_m": stack(qm),
            "qz_v": stack(qv),
            "pz_m": stack(pm),
            "pz_v": stack(pv),
            "z": stack(zs),
            "h_prev": stack(hs),
            "dt": dt,
        }

    def _get_generative_input(
        self, tensors: dict[str, torch.Tensor], inference_outputs: dict[str, torch.Tensor], **kwargs
    ) -> dict[str, torch.Tensor]:
        return {"z": inference_outputs["z"], "h_prev": inference_outputs["h_prev"], "dt": inference_outputs["dt"]}

    @auto_move_data
    def generative(self, z: torch.Tensor, h_prev: torch.Tensor, dt: torch.Tensor) -> dict[str, torch.Tensor]:
        """Decode every time point from ``z_t`` and the state ``h_{t-1}``; ``x_t`` is not an input.

        Returns ``px_m`` (mean, ``(B, T)``) and ``px_v`` (model variance, ``(B, T)``; the
        observation's squared standard error is added in :meth:`loss`).
        """
        parts = [self.phi_z(z), h_prev]
        if self.use_dt:
            parts.append(self._dt_input(dt))
        px_m = self.decoder(torch.cat(parts, dim=-1)).squeeze(-1)
        px_v = (self.log_var_model.exp() + self.min_variance).expand_as(px_m)
        return {"px_m": px_m, "px_v": px_v}

    def loss(
        self,
        tensors: dict[str, torch.Tensor],
        inference_outputs: dict[str, torch.Tensor],
        generative_outputs: dict[str, torch.Tensor],
        kl_weight: float | torch.Tensor = 1.0,
    ) -> LossOutput:
        """Negative ELBO per gene: Σ_t Gaussian NLL with variance σ²_model + se²_t, plus β·Σ_t KL."""
        x = tensors[REGISTRY_KEYS.X_KEY]
        var = generative_outputs["px_v"]
        if self.use_noise:
            var = var + tensors[NOISE_KEY].clamp_min(0.0)
        nll = 0.5 * (_LOG_2PI + torch.log(var) + (x - generative_outputs["px_m"]) ** 2 / var)
        rec = nll.sum(-1)
        kl = gaussian_kl(
            inference_outputs["qz_m"], inference_outputs["qz_v"], inference_outputs["pz_m"], inference_outputs["pz_v"]
        ).sum((-1, -2))
        loss = (rec + kl_weight * kl).mean()
        return LossOutput(loss=loss, reconstruction_loss=rec, kl_local=kl)


class VRNNTrainingPlan(TrainingPlan):
    """scvi-tools' plan, lean on logging, with the module put in training mode at every fit.

    * Lightning ≥ 2.6 no longer calls ``.train()`` on a module that a previous fit left in eval
      mode, so a second ``train()`` call would otherwise run in eval mode.
    * With small mini-batches of short time courses, Lightning's per-step ``log`` calls cost
      more than the network itself; the loss terms are summed over the epoch instead and logged
      once per epoch under scvi-tools' names (``train_loss``, ``elbo_train``,
      ``reconstruction_loss_train``, ``kl_local_train``), with the epoch's ``kl_weight`` and the
      learned model standard deviation (``model_sd_train``).
    * ``lr_decay``: cosine annealing of the learning rate from ``lr`` to ``lr * lr_decay`` over
      the epochs (``None``: constant).
    """

    def __init__(self, module, *, lr_decay: float | None = None, **kwargs):
        super().__init__(module, **kwargs)
        self.lr_decay = lr_decay

    def configure_optimizers(self):
        config = super().configure_optimizers()
        if self.lr_decay is not None and self.trainer is not None and self.trainer.max_epochs:
            config["lr_scheduler"] = {
                "scheduler": torch.optim.lr_scheduler.CosineAnnealingLR(
                    config["optimizer"], T_max=self.trainer.max_epochs, eta_min=self.lr * self.lr_decay
                ),
                "interval": "epoch",
            }
        return config

    def on_train_start(self) -> None:
        self.module.train()

    def on_train_epoch_start(self) -> None:
        self._sums = torch.zeros(4, device=self.device)  # loss·n, reconstruction, KL, n

    def training_step(self, batch, batch_idx):
        if "kl_weight" in self.loss_kwargs:
            self.loss_kwargs.update({"kl_weight": self.kl_weight})
        _, _, out = self.forward(batch, loss_kwargs=self.loss_kwargs)
        n = out.n_obs_minibatch
        with torch.no_grad():
            self._sums += torch.stack(
                [
                    out.loss.detach() * n,
                    out.reconstruction_loss_sum.detach(),
                    out.kl_local_sum.detach(),
                    torch.tensor(float(n), device=self._sums.device),
                ]
            )
        return out.loss

    def on_train_epoch_end(self) -> None:
        loss, rec, kl, n = (self._sums / self._sums[3].clamp_min(1.0)).tolist()[:3] + [self._sums[3].item()]
        if n == 0:
            return
        metrics = {
            "train_loss": loss,
            "elbo_train": rec + kl,
            "reconstruction_loss_train": rec,
            "kl_local_train": kl,
            "kl_weight": float(self.kl_weight),
            "model_sd_train": float(self.module.log_var_model.detach().exp().sqrt()),
        }
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=False)
