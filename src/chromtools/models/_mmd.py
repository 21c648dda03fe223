"""trVAE's maximum mean discrepancy between the latent codes of batches in a minibatch."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Bandwidths of the multi-scale RBF kernel of trVAE's MMD (squared-distance scales).
_MMD_SCALES = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1, 5, 10, 15, 20, 25, 30, 35, 100, 1e3, 1e4, 1e5, 1e6)


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
