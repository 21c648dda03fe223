"""Out-of-core peak matrices: read backed or lazily loaded counts in row blocks, never whole.

A count matrix is *lazy* when it is not in memory: the ``X`` of an AnnData opened with
``anndata.read_h5ad(path, backed="r")`` (an :class:`anndata.abc.CSRDataset`, or an
:class:`h5py.Dataset` when dense), a sparse dataset put into an in-memory AnnData
(``AnnData(X=anndata.io.sparse_dataset(group))``, also as a layer), or a Dask array. scvi-tools'
:class:`~scvi.data.AnnTorchDataset` reads minibatches from a CSR dataset directly, so a model
trains and encodes such data one minibatch at a time. The helpers here do the same for every
other pass chromtools makes over the counts (input checks, the IDF, feature alignment): they
read row blocks, so memory is bounded by a block, not by the matrix.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import scipy.sparse as sp

logger = logging.getLogger(__name__)

#: Target size of one row block of a sparse matrix, in stored values (about 100 MB with indices).
BLOCK_NNZ = 8_000_000
#: Target size of one row block of a dense matrix, in bytes.
BLOCK_BYTES = 128 * 2**20


def _sparse_dataset_types() -> tuple[type, ...]:
    from anndata.abc import CSCDataset, CSRDataset

    return (CSRDataset, CSCDataset)


def _is_csc_dataset(X) -> bool:
    from anndata.abc import CSCDataset

    return isinstance(X, CSCDataset)


def is_lazy_matrix(X) -> bool:
    """Whether ``X`` stays on disk (a backed sparse dataset, an HDF5/Zarr dataset or a Dask array)."""
    if isinstance(X, _sparse_dataset_types()):
        return True
    try:
        import h5py

        if isinstance(X, h5py.Dataset):
            return True
    except ImportError:  # pragma: no cover - h5py comes with anndata
        pass
    mod = type(X).__module__
    return mod.startswith("zarr") or mod.startswith("dask")


def check_rows_readable(X, what: str = "data") -> None:
    """Refuse a lazy matrix whose rows cannot be read in blocks (CSC on disk)."""
    if _is_csc_dataset(X):
        msg = (
            f"The {what} matrix is stored on disk as CSC (column-compressed): reading it by cells would load "
            "all of it for every block. Rewrite it as CSR once, e.g. adata = anndata.read_h5ad(path); "
            "adata.X = adata.X.tocsr(); adata.write_h5ad(path_csr), then open that file with backed='r'."
        )
        raise ValueError(msg)


def block_rows(X) -> int:
    """Rows per block so that one block holds about :data:`BLOCK_NNZ` values (sparse) or :data:`BLOCK_BYTES`."""
    n_obs, n_vars = X.shape
    if isinstance(X, _sparse_dataset_types()) or sp.issparse(X):
        nnz = _nnz(X)
        per_row = max(nnz / max(n_obs, 1), 1.0)
        return int(max(1, min(n_obs, BLOCK_NNZ // per_row)))
    itemsize = np.dtype(getattr(X, "dtype", np.float32)).itemsize
    return int(max(1, min(n_obs, BLOCK_BYTES // max(n_vars * itemsize, 1))))


def _nnz(X) -> int:
    if sp.issparse(X):
        return int(X.nnz)
    group = getattr(X, "group", None)
    if group is not None and "data" in group:
        return int(group["data"].shape[0])
    return int(np.prod(X.shape))


def _as_csr(block) -> sp.csr_matrix:
    if hasattr(block, "compute"):  # a Dask block
        block = block.compute()
    if sp.issparse(block):
        return sp.csr_matrix(block)
    return sp.csr_matrix(np.asarray(block))


def iter_row_blocks(X, rows: int | None = None, *, what: str = "data") -> Iterator[tuple[int, int, sp.csr_matrix]]:
    """Yield ``(start, stop, block)`` over the rows of ``X``, each block a CSR matrix of ``rows`` rows at most."""
    check_rows_readable(X, what)
    n_obs = X.shape[0]
    rows = block_rows(X) if rows is None else int(rows)
    for start in range(0, n_obs, rows):
        stop = min(start + rows, n_obs)
        yield start, stop, _as_csr(X[start:stop])


def sample_values(X, max_values: int = 2_000_000, n_blocks: int = 8) -> np.ndarray:
    """Stored values from ``n_blocks`` row blocks spread over a lazy matrix (about ``max_values`` in all).

    Enough to catch normalised or log-transformed data without reading the whole file.
    """
    check_rows_readable(X)
    n_obs = X.shape[0]
    if n_obs == 0:
        return np.zeros(0)
    per_row = max(_nnz(X) / n_obs, 1.0)
    rows = int(max(1, min(block_rows(X), max_values / n_blocks / per_row)))
    starts = np.unique(np.linspace(0, max(n_obs - rows, 0), n_blocks).astype(np.int64))
    parts = [_as_csr(X[s : min(s + rows, n_obs)]).data for s in starts]
    return np.concatenate(parts) if parts else np.zeros(0)


def column_open_counts(X) -> np.ndarray:
    """Number of cells with a non-zero count in each column, read in row blocks."""
    out = np.zeros(X.shape[1], np.int64)
    for _, _, block in iter_row_blocks(X):
        block.eliminate_zeros()
        out += np.bincount(block.indices, minlength=X.shape[1])
    return out


class Scratch:
    """A temporary folder holding on-disk copies of matrices, removed by :meth:`close` (or at exit)."""

    def __init__(self, parent: str | os.PathLike | None = None):
        if parent is not None and not Path(parent).is_dir():
            msg = f"scratch_dir '{parent}' is not an existing folder; create it or pass None (the system temp folder)."
            raise FileNotFoundError(msg)
        self.path = Path(tempfile.mkdtemp(prefix="chromtools-", dir=parent))
        self._files: list = []
        import weakref

        self._finalizer = weakref.finalize(self, Scratch._remove, self._files, self.path)

    @staticmethod
    def _remove(files: list, path: Path) -> None:
        for f in files:
            try:
                f.close()
            except Exception:  # noqa: BLE001 - already closed or never opened
                pass
        shutil.rmtree(path, ignore_errors=True)

    def write_csr(self, X, S: sp.spmatrix | None = None, *, name: str = "matrix", what: str = "data"):
        """Write ``X @ S`` (or ``X``) block by block to an HDF5 file here and return it as a backed CSR dataset."""
        import h5py
        from anndata.io import sparse_dataset, write_elem

        path = self.path / f"{name}.h5"
        n_obs = X.shape[0]
        n_out = X.shape[1] if S is None else S.shape[1]
        with h5py.File(path, "w") as f:
            dataset = None
            for _, _, block in iter_row_blocks(X, what=what):
                if S is not None:
                    block = (block @ S.astype(block.dtype)).tocsr()
                block.sort_indices()
                if dataset is None:
                    write_elem(f, "X", block)
                    dataset = sparse_dataset(f["X"])
                else:
                    dataset.append(block)
            if dataset is None:  # no rows
                write_elem(f, "X", sp.csr_matrix((0, n_out), dtype=np.float32))
        handle = h5py.File(path, "r")
        self._files.append(handle)
        out = sparse_dataset(handle["X"])
        if out.shape != (n_obs, n_out):  # pragma: no cover - a broken writer
            msg = f"On-disk copy has shape {out.shape}, expected {(n_obs, n_out)}."
            raise RuntimeError(msg)
        logger.info("Wrote an on-disk CSR copy (%d x %d) to %s", n_obs, n_out, path)
        return out

    def close(self) -> None:
        """Close the files and remove the folder."""
        self._finalizer()


def rows_as_csr_dataset(X, scratch_parent=None, *, what: str = "data"):
    """A backed CSR dataset with the rows of lazy ``X``: ``X`` itself when it is one, else an on-disk copy.

    Returns the dataset and the :class:`Scratch` holding the copy (``None`` when none was made).
    scvi-tools reads minibatches of any order from a CSR dataset; HDF5 datasets need increasing
    indices and Dask arrays are sliced lazily, so both are copied to CSR first, block by block.
    """
    from anndata.abc import CSRDataset

    check_rows_readable(X, what)
    if isinstance(X, CSRDataset):
        return X, None
    scratch = Scratch(scratch_parent)
    return scratch.write_csr(X, name="counts", what=what), scratch
