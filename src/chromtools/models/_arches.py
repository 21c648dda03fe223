"""Architecture-surgery helpers: train only what surgery added, and prove the rest did not move."""

from __future__ import annotations

import logging
import os
from typing import Any, Literal

import pandas as pd
import torch

logger = logging.getLogger(__name__)


def reference_state_dict(reference) -> dict[str, torch.Tensor]:
    """A detached CPU copy of a reference model's weights (from a model or a saved folder)."""
    if isinstance(reference, str | os.PathLike):
        path = os.path.join(str(reference), "model.pt")
        state = torch.load(path, map_location="cpu", weights_only=False)["model_state_dict"]
        return {k: v.detach().clone() for k, v in state.items() if isinstance(v, torch.Tensor)}
    return {k: v.detach().cpu().clone() for k, v in reference.module.state_dict().items()}


def _old_block(shape: torch.Size) -> tuple[slice, ...]:
    return tuple(slice(0, s) for s in shape)


def freeze_for_surgery(query_model, reference_state: dict[str, torch.Tensor]) -> pd.DataFrame:
    """Make only the parameter entries added by surgery trainable.

    After :meth:`~scvi.model.base.ArchesMixin.load_query_data`, every parameter whose shape grew
    (batch rows of chromtools models, one-hot batch columns of scvi-tools' first layers,
    per-batch dispersions or backgrounds) holds the reference values in its leading block and
    freshly initialised entries for the new batches. This function sets ``requires_grad`` on
    those parameters only and masks the gradient of their leading block, so that with zero
    weight decay every reference value stays bit-identical. All other parameters are frozen.

    Parameters
    ----------
    query_model
        The model returned by ``load_query_data``.
    reference_state
        The reference's state dict (:func:`reference_state_dict`).

    Returns
    -------
    One row per parameter: name, reference and query shape, number of trainable entries.
    """
    rows: list[tuple[str, tuple[int, ...] | None, tuple[int, ...], int]] = []
    for name, param in query_model.module.named_parameters():
        ref = reference_state.get(name)
        if ref is not None and ref.shape == param.shape:
            param.requires_grad_(False)
            rows.append((name, tuple(ref.shape), tuple(param.shape), 0))
            continue
        if ref is None:  # a parameter the reference does not have: all of it is new
            param.requires_grad_(True)
            rows.append((name, None, tuple(param.shape), param.numel()))
            continue
        mask = torch.ones_like(param, dtype=torch.bool)
        mask[_old_block(ref.shape)] = False
        param.requires_grad_(True)
        param.register_hook(lambda grad, m=mask: grad * m.to(grad.device, grad.dtype))
        rows.append((name, tuple(ref.shape), tuple(param.shape), int(mask.sum())))
    table = pd.DataFrame(rows, columns=["parameter", "reference_shape", "query_shape", "n_trainable"])
    n = int(table["n_trainable"].sum())
    logger.info("Surgery: %d trainable entries in %d parameters", n, int((table["n_trainable"] > 0).sum()))
    return table


def frozen_weight_drift(reference_state: dict[str, torch.Tensor], query_model) -> pd.DataFrame:
    """Compare every reference tensor with the corresponding block of the query model.

    Parameters
    ----------
    reference_state
        The reference's state dict (:func:`reference_state_dict`), taken before surgery.
    query_model
        The query model after surgery training.

    Returns
    -------
    One row per reference tensor (parameters and buffers): ``max_abs_diff`` and ``identical``
    (bit-for-bit equality of the reference block).
    """
    state = query_model.module.state_dict()
    rows = []
    for name, ref in reference_state.items():
        if name not in state:
            rows.append((name, float("nan"), False))
            continue
        cur = state[name].detach().cpu()
        block = cur[_old_block(ref.shape)] if cur.shape != ref.shape else cur
        if block.shape != ref.shape:
            rows.append((name, float("nan"), False))
            continue
        same = bool(torch.equal(block, ref))
        diff = 0.0 if same else float((block.double() - ref.double()).abs().max()) if block.numel() else 0.0
        rows.append((name, diff, same))
    return pd.DataFrame(rows, columns=["tensor", "max_abs_diff", "identical"])


def surgery_ready_kwargs(kind: Literal["peakvi", "poissonvi", "multivi"]) -> dict[str, Any]:
    """Constructor arguments that make an scvi-tools model fit for architecture surgery.

    scvi-tools' ATAC models do not encode the batch by default (``encode_covariates=False``),
    which makes surgery a no-op on the latent space; chromtools turns it on and keeps layer norm
    (no batch norm, whose statistics would shift with the query) and covariates in the first
    layer only, as the scArches authors recommend.

    Parameters
    ----------
    kind
        ``'peakvi'``, ``'poissonvi'`` or ``'multivi'``.

    Returns
    -------
    Keyword arguments for the model's constructor (e.g. ``scvi.model.PEAKVI(adata, **kwargs)``).
    """
    if kind == "peakvi" or kind == "multivi":
        return {
            "encode_covariates": True,
            "deeply_inject_covariates": False,
            "use_layer_norm": "both",
            "use_batch_norm": "none",
        }
    if kind == "poissonvi":  # POISSONVI hard-codes layer norm and no batch norm
        return {"encode_covariates": True, "deeply_inject_covariates": False}
    msg = f"kind must be 'peakvi', 'poissonvi' or 'multivi', got {kind!r}."
    raise ValueError(msg)
