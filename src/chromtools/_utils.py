"""Small helpers shared by every namespace: atomic outputs, modality selection, seeding, timing, quiet logs."""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
import tempfile
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, cast

import numpy as np
from isal import igzip, isal_zlib

if TYPE_CHECKING:
    from anndata import AnnData
    from mudata import MuData

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike

#: What reading a damaged or truncated gzip/BGZF file raises. ISA-L (``isal.igzip``) raises the
#: standard library's ``EOFError`` on a truncated file and ``BadGzipFile`` on a bad header, but its
#: own error class on a damaged deflate stream (its stubs type that class as an instance).
GZIP_DAMAGE_ERRORS: tuple[type[Exception], ...] = (
    EOFError,
    zlib.error,
    cast("type[Exception]", isal_zlib.error),
    gzip.BadGzipFile,
    UnicodeDecodeError,
)


def open_maybe_gzip(path: PathLike) -> IO[bytes]:
    """Open a file for reading bytes, decompressing gzip/BGZF (told by its magic bytes) with ISA-L.

    ISA-L reads the same multi-member streams as :mod:`gzip`, about three times as fast.
    """
    with open(path, "rb") as fh:
        magic = fh.read(2)
    return cast("IO[bytes]", igzip.open(path, "rb")) if magic == b"\x1f\x8b" else open(path, "rb")


@contextlib.contextmanager
def atomic_output(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds.

    The temporary file keeps the suffix of ``path`` (some writers look at it) and lives in the
    same folder, so the final :func:`os.replace` is atomic. On any exception the temporary file
    is removed and ``path`` is left untouched: no half-written output is ever visible.
    """
    path = Path(path)
    if path.is_dir():
        msg = f"Output path '{path}' is a directory; pass a file path."
        raise IsADirectoryError(msg)
    if not path.parent.exists():
        msg = f"Output folder '{path.parent}' does not exist; create it first or pass another path."
        raise FileNotFoundError(msg)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{''.join(path.suffixes[-1:])}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    tmp_path.unlink()  # writers such as pyBigWig create the file themselves
    try:
        yield tmp_path
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    else:
        if not tmp_path.exists():
            msg = f"Writer produced no file for '{path}'."
            raise RuntimeError(msg)
        os.replace(tmp_path, path)


def get_modality(data: AnnData | MuData, mod: str | None = "atac") -> AnnData:
    """Return the AnnData to work on: ``data`` itself, or modality ``mod`` of a MuData.

    Follows muon's ``atac`` convention: a MuData without ``mod`` given falls back to its
    ``'atac'`` modality.
    """
    from anndata import AnnData
    from mudata import MuData

    if isinstance(data, AnnData):
        return data
    if isinstance(data, MuData):
        if mod is None:
            mod = "atac"
        if mod not in data.mod:
            msg = f"MuData has no modality '{mod}' (it has {list(data.mod)}); pass mod=<one of these>."
            raise KeyError(msg)
        return data.mod[mod]
    msg = f"Expected an AnnData or MuData object, got {type(data).__name__}."
    raise TypeError(msg)


def check_random_state(random_state: int | np.random.Generator | None) -> np.random.Generator:
    """Turn an int seed, a Generator or None into a :class:`numpy.random.Generator`."""
    if isinstance(random_state, np.random.Generator):
        return random_state
    if random_state is not None and not isinstance(random_state, int | np.integer):
        msg = f"random_state must be an int, a numpy Generator or None, got {type(random_state).__name__}."
        raise TypeError(msg)
    return np.random.default_rng(random_state)


@contextlib.contextmanager
def log_time(message: str, log: logging.Logger | None = None) -> Iterator[None]:
    """Log ``message`` when a block starts and its duration when it ends."""
    log = log or logger
    log.info("%s ...", message)
    start = time.perf_counter()
    yield
    log.info("%s finished in %.1f s", message, time.perf_counter() - start)


def moving_average(x: np.ndarray, width: int) -> np.ndarray:
    """Mean over a centred window of ``width`` values (zeros beyond the ends), float32; ``width <= 1`` returns ``x``.

    The denoiser smooths its noisy input with it in training and at inference, so both must agree
    to the last bit: a direct float32 convolution, not the O(n) cumulative sum of
    :func:`box_mean`, whose float64 rounding differs.
    """
    if width <= 1:
        return x
    kernel = np.ones(width, np.float32) / width
    return np.convolve(x, kernel, mode="same").astype(np.float32)


def box_mean(x: np.ndarray, width: int) -> np.ndarray:
    """Mean of ``x`` over a centred window of ``width`` values (zeros beyond the ends), in O(n).

    The same as ``np.convolve(x, np.ones(width) / width, mode="same")`` up to rounding (float64
    cumulative sums), whose direct sum costs O(n * width) and takes hours on a whole chromosome.
    ``width <= 1`` returns ``x``.
    """
    if width <= 1:
        return x
    n, half = x.size, width // 2
    csum = np.cumsum(x, dtype=np.float64)
    ext = np.concatenate((np.zeros(half + 1), csum, np.full(width, csum[-1] if n else 0.0)))
    return ((ext[width : width + n] - ext[:n]) / width).astype(np.float32)


def quiet_lightning(level: int = logging.WARNING) -> None:
    """Silence Lightning's start-up chatter and its notices that do not apply to chromtools' training loops.

    Lightning's loggers are set to ``level`` (the reference models use ``logging.ERROR``).
    """
    import warnings

    from lightning.pytorch.utilities.warnings import PossibleUserWarning

    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(level)
    warnings.filterwarnings("ignore", category=PossibleUserWarning)
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated", category=FutureWarning)


@contextlib.contextmanager
def quiet_training_warnings() -> Iterator[None]:
    """Hide, inside the block only, Lightning's notices about loader workers, logging and deprecated pytree specs."""
    import warnings

    from lightning.pytorch.utilities.warnings import PossibleUserWarning

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=PossibleUserWarning)
        warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated", category=FutureWarning)
        warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
        yield


def get_layer(adata: AnnData, layer: str | None):
    """``adata.X`` when ``layer`` is None, else ``adata.layers[layer]``; a missing layer is a clear error."""
    if layer is None:
        return adata.X
    if layer not in adata.layers:
        msg = f"AnnData has no layer '{layer}' (layers: {list(adata.layers)}); pass layer=None to use X."
        raise KeyError(msg)
    return adata.layers[layer]


def idf(n_open: np.ndarray, n_cells: int) -> np.ndarray:
    """Inverse document frequency of each peak, ``log(1 + n_cells / (1 + n_open))``, as float32.

    The one place of the formula (ct.pp.tfidf_matrix and the reference models' encoder input).
    It is computed in the precision of ``n_open`` (float32 counts stay float32, integer counts
    go through float64), so each caller keeps its numbers to the last bit.
    """
    return np.log1p(n_cells / (1.0 + n_open)).astype(np.float32)


@contextlib.contextmanager
def quiet_scvi(level: int = logging.WARNING) -> Iterator[None]:
    """Set ``scvi.settings.verbosity`` to ``level`` inside the block, then restore it (scvi-tools logs per call)."""
    import scvi

    old = scvi.settings.verbosity
    scvi.settings.verbosity = level
    try:
        yield
    finally:
        scvi.settings.verbosity = old


@contextlib.contextmanager
def _quiet_seed_notice() -> Iterator[None]:
    """Hide Lightning's "Seed set to" notice inside the block."""
    seed_log = logging.getLogger("lightning.fabric.utilities.seed")
    old_level = seed_log.level
    seed_log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        seed_log.setLevel(old_level)


def seed_all(seed: int | None) -> None:
    """Seed Python, NumPy and torch for good through ``scvi.settings.seed``; ``None`` leaves them alone.

    Lightning's "Seed set to" notice is not logged.
    """
    if seed is None:
        return
    import scvi

    with _quiet_seed_notice(), quiet_scvi():
        scvi.settings.seed = int(seed)


@contextlib.contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Seed Python, NumPy and torch (as :func:`seed_all`) inside the block, then restore their random states.

    Inside the block scvi-tools logs warnings only. ``None`` runs the block unseeded.
    """
    if seed is None:
        yield
        return
    import random

    import torch

    states = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        with _quiet_seed_notice(), quiet_scvi():
            seed_all(seed)
            yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
