"""What every ``ct.pl`` function shares: saving, showing or returning its figure, and UMAP coordinates."""

from __future__ import annotations

import sys
import warnings
from typing import TYPE_CHECKING

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from chromtools._utils import PathLike, atomic_output

if TYPE_CHECKING:
    import pandas as pd
    from anndata import AnnData
    from matplotlib.axes import Axes

# Backends that draw to files only: a figure "shown" there cannot be seen, so it is closed.
_FILE_BACKENDS = {"agg", "cairo", "pdf", "pgf", "ps", "svg", "template"}


def figure_of(ax: Axes) -> Figure:
    """The top-level figure of ``ax``, also when ``ax`` lies in a subfigure."""
    fig = ax.figure
    return fig if isinstance(fig, Figure) else fig.figure


def savefig(fig: Figure, path: PathLike) -> None:
    """Write ``fig`` to ``path`` through a temporary file, so that no half-written figure is ever visible."""
    with atomic_output(path) as tmp:
        fig.savefig(tmp, bbox_inches="tight")


def show_or_return(fig: Figure, *, show: bool | None, save: PathLike | None) -> Figure | None:
    """End a plotting function as scanpy does: save if asked, then show and return None, or return the figure.

    ``show=None`` shows only when matplotlib is interactive (Jupyter, ``plt.ion()``). A shown figure
    is closed afterwards when the backend cannot display it, so that scripts do not accumulate
    open figures.
    """
    if save is not None:
        savefig(fig, save)
    if show is None:
        show = plt.isinteractive()
    if not show:
        return fig
    plt.show()
    if matplotlib.get_backend().lower() in _FILE_BACKENDS:
        plt.close(fig)
    return None


#: from this many rows scanpy searches neighbours with pynndescent instead of an exact search
_SCANPY_APPROX_KNN_MIN_ROWS = 8192


class _CsrMatrixKnn:
    """A pynndescent kNN transformer whose graph comes back as a ``scipy.sparse.csr_matrix``.

    pynndescent 0.7 returns a ``csr_array``, which scanpy 1.11's :func:`scanpy.pp.neighbors`
    cannot read (it calls ``getnnz(axis=1)``, which sparse arrays lack), so neighbours of 8,192 or
    more rows fail there. The settings are the ones scanpy picks itself for that many rows.
    """

    def __init__(self, n_rows: int, n_neighbors: int, random_state: int):
        from pynndescent import PyNNDescentTransformer

        self._inner = PyNNDescentTransformer(
            n_neighbors=n_neighbors,
            metric="euclidean",
            random_state=random_state,
            n_trees=min(64, 5 + round(n_rows**0.5 / 20.0)),
            n_iters=max(5, round(np.log2(n_rows))),
        )

    def get_params(self, deep: bool = True) -> dict:
        return self._inner.get_params(deep=deep)

    def fit_transform(self, X, y=None):
        from scipy.sparse import csr_matrix

        return csr_matrix(self._inner.fit_transform(X))


def umap_coords(
    obs: pd.DataFrame,
    rep: np.ndarray,
    *,
    n_neighbors: int,
    min_dist: float,
    random_state: int,
) -> np.ndarray:
    """2-D UMAP of the rows of ``rep`` with :func:`scanpy.pp.neighbors` and :func:`scanpy.tl.umap`, on a temporary AnnData.

    ``n_neighbors`` is capped at the number of rows minus one, so that small inputs still embed. From
    8,192 rows the approximate neighbours (pynndescent, as scanpy would choose) are handed to scanpy
    as a ``csr_matrix`` (see :class:`_CsrMatrixKnn`).
    """
    import scanpy as sc
    from anndata import AnnData

    tmp = AnnData(obs=obs.copy())
    tmp.obsm["X_rep"] = np.asarray(rep, dtype=np.float32)
    n_neighbors = int(min(n_neighbors, max(2, tmp.n_obs - 1)))
    transformer = (
        _CsrMatrixKnn(tmp.n_obs, n_neighbors, random_state) if tmp.n_obs >= _SCANPY_APPROX_KNN_MIN_ROWS else None
    )
    torch = sys.modules.get("torch")
    # numba's OpenMP layer (under UMAP) resets the thread count that torch shares, which slows every later
    # torch computation in the session: restore it when torch is loaded.
    threads = torch.get_num_threads() if torch is not None else None
    try:
        sc.pp.neighbors(
            tmp, n_neighbors=n_neighbors, use_rep="X_rep", random_state=random_state, transformer=transformer
        )
        sc.tl.umap(tmp, min_dist=min_dist, random_state=random_state)
    finally:
        if torch is not None:
            torch.set_num_threads(threads)
    return np.asarray(tmp.obsm["X_umap"])


def draw_embedding(frame: AnnData, ax: Axes, **kwargs) -> None:
    """Draw ``frame.obsm['X_umap']`` into ``ax`` with :func:`scanpy.pl.embedding` (``kwargs`` go there)."""
    import scanpy as sc

    with warnings.catch_warnings():
        # scanpy's own call, deprecated by recent matplotlib: not the user's business
        warnings.filterwarnings("ignore", message="The set_bad function", category=PendingDeprecationWarning)
        sc.pl.embedding(frame, "umap", ax=ax, show=False, **kwargs)


def embedding_frame(obs: pd.DataFrame, coords: np.ndarray, basis: str) -> AnnData:
    """A temporary AnnData with ``obs`` and ``obsm[basis]``, for :func:`scanpy.pl.embedding`."""
    from anndata import AnnData

    tmp = AnnData(obs=obs.copy())
    tmp.obsm[basis] = np.asarray(coords, dtype=float)[:, :2]
    return tmp
