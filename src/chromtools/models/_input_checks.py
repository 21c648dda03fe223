"""Input checks of the reference models: raw counts only, and the IDF of the reference's peaks."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from chromtools._utils import get_layer, idf


def check_count_matrix(adata: AnnData, layer: str | None, *, what: str = "data") -> None:
    """Raise a clear error unless ``adata.X``/``layer`` holds non-negative integer counts.

    All reference models of chromtools use count likelihoods (Bernoulli of accessibility,
    Poisson, negative binomial); normalised or log-transformed values would silently train a
    wrong model. A backed or lazily loaded matrix is checked on a sample of row blocks spread
    over the file (about two million values), so the check never loads it whole.
    """
    from chromtools.models._backed import is_lazy_matrix, sample_values

    X = get_layer(adata, layer)
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

    A backed or lazily loaded ``X`` is read in row blocks (as :func:`chromtools.models.is_lazy_matrix` tells).
    """
    from chromtools.models._backed import column_open_counts, is_lazy_matrix

    n = X.shape[0]
    if is_lazy_matrix(X):
        n_open = column_open_counts(X)
    elif sp.issparse(X):
        n_open = np.asarray((X > 0).sum(axis=0)).ravel()
    else:
        n_open = (np.asarray(X) > 0).sum(axis=0)
    return idf(n_open, n)
