"""Genome-wide denoising sharded over Dask workers: one task per (sample, chromosome), then one merge.

Each task runs :func:`chromtools.tl.denoise` on one chromosome of one sample and writes its own
shard files (raw float32 arrays, so that each bigWig is encoded once). Writing a bigWig is
sequential, so each output bigWig is a task of its own that depends on its sample's shards and
appends them in the genome order of the input: a sample's denoised and peak-probability bigWigs
are encoded on two workers at once. The driver writes the narrowPeak. Every output is written to a
temporary file and renamed. Windows never cross chromosomes and a chromosome's batches are the
same in a shard as in a single-process run, so the merged output is identical, value for value,
to what one process writes. The scheduling, retries and placement are Dask's.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from chromtools.io import BigWigWriter, write_narrowpeak

from ._peaks import name_peaks

if TYPE_CHECKING:
    from distributed import Client

    from chromtools._utils import PathLike
    from chromtools.models import TrackDenoiser

    from ._denoise import DenoiseResult

logger = logging.getLogger(__name__)
MERGE_BLOCK = 10_000_000  # bases copied from a shard to the bigWig at a time while merging (40 MB of float32)


def _import_distributed():
    try:
        import distributed
    except ImportError as err:  # pragma: no cover - depends on the environment
        msg = (
            "Distributed denoising needs Dask's scheduler: pip install 'chromtools[scale]' "
            "(or pip install 'dask[distributed]')."
        )
        raise ImportError(msg) from err
    return distributed


@contextlib.contextmanager
def dask_client(client: Client | str, n_workers: int | None = None) -> Iterator[Client]:
    """Yield a Dask client: the one given, one connected to a scheduler address, or a new local cluster.

    ``client="local"`` starts a :class:`~distributed.LocalCluster` of ``n_workers`` single-threaded
    worker processes (default: one per CPU core) and closes it on exit; a client passed in is left open.
    """
    distributed = _import_distributed()
    if isinstance(client, distributed.Client):
        yield client
        return
    if not isinstance(client, str):
        msg = f"client must be a distributed.Client, a scheduler address or 'local', got {type(client).__name__}."
        raise TypeError(msg)
    if client == "local":
        n = n_workers or os.cpu_count() or 1
        with (
            distributed.LocalCluster(
                n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=logging.ERROR
            ) as cluster,
            distributed.Client(cluster) as own,
        ):
            yield own
    else:
        with distributed.Client(client) as own:
            yield own


@contextlib.contextmanager
def _malloc_for_large_arrays() -> Iterator[None]:
    """Let glibc keep freed multi-MB buffers on the heap for the length of a task.

    Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which also turns off glibc's
    adaptive mmap threshold: then every batch array (several MB) is mmap'ed, page-faulted in and
    unmapped again, and a denoising task runs about 2x slower than in a plain process (measured).
    Raising both thresholds while a task runs restores plain-process speed; afterwards the trim
    threshold is set back to the nanny's value and the heap is trimmed, so memory still goes back to
    the OS between tasks. A no-op where glibc's ``mallopt`` is unavailable.
    """
    libc = None
    with contextlib.suppress(OSError, TypeError):
        name = ctypes.util.find_library("c")
        libc = ctypes.CDLL(name) if name else None
    if libc is None or not hasattr(libc, "mallopt") or os.environ.get("MALLOC_TRIM_THRESHOLD_") is None:
        yield
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's mallopt parameter numbers
    libc.mallopt(m_mmap_threshold, 64 << 20)
    libc.mallopt(m_trim_threshold, 256 << 20)
    try:
        yield
    finally:
        libc.mallopt(m_trim_threshold, int(os.environ["MALLOC_TRIM_THRESHOLD_"]))
        with contextlib.suppress(AttributeError):
            libc.malloc_trim(0)


_WORKER_MODELS: dict[tuple[str, float], TrackDenoiser] = {}  # per worker process: a model loads once, not per task


def _denoise_shard(noisy: str, model_dir: str, prefix: str, chrom: str, kwargs: dict, threads: int) -> DenoiseResult:
    """Worker task: denoise one chromosome of one sample into its own shard files."""
    import torch

    from ._denoise import _denoise_one

    model = _worker_model(model_dir)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with _malloc_for_large_arrays():
            return _denoise_one(noisy, model, prefix, chroms=[chrom], progress=False, shard=True, **kwargs)
    finally:
        torch.set_num_threads(before)


def _worker_model(model_dir: str) -> TrackDenoiser:
    """The model saved in ``model_dir``, loaded once per worker process (reloaded if the folder changed)."""
    from chromtools.models import TrackDenoiser

    key = (model_dir, max(p.stat().st_mtime for p in Path(model_dir).iterdir()))
    if key not in _WORKER_MODELS:
        _WORKER_MODELS.clear()
        _WORKER_MODELS[key] = TrackDenoiser.load(model_dir)
    return _WORKER_MODELS[key]


def _copy_shard(writer: BigWigWriter, shard: Path, chrom: str, size: int) -> None:
    """Append one chromosome's shard (a float32 ``.npy``) to an open bigWig writer, a block at a time, then delete it."""
    values = np.load(shard, mmap_mode="r")
    for start in range(0, size, MERGE_BLOCK):
        writer.add(chrom, np.asarray(values[start : start + MERGE_BLOCK]), start=start)
    del values
    shard.unlink()


def _write_bigwig(shards: list[DenoiseResult], kind: str, sizes: dict[str, int], out: str, zoom_levels: int) -> str:
    """Worker task: encode one sample's ``kind`` track ('track' or 'peakprob') from its shards, in genome order.

    The bigWig is written to a temporary file and renamed when complete; each shard is deleted once appended.
    """
    with _malloc_for_large_arrays(), BigWigWriter(out, sizes, zoom_levels=zoom_levels) as writer:
        for (chrom, size), shard in zip(sizes.items(), shards, strict=True):
            _copy_shard(writer, Path(getattr(shard, kind)), chrom, size)
    return out


def denoise_distributed(
    noisy: Sequence[PathLike],
    model: TrackDenoiser | PathLike,
    out_prefixes: Sequence[PathLike],
    *,
    client: Client | str,
    n_workers: int | None = None,
    threads_per_task: int = 1,
    chrom_sizes: Mapping[str, int] | PathLike | None = None,
    chroms: Sequence[str] | None = None,
    **kwargs: Any,
) -> list[DenoiseResult]:
    """Denoise several bigWigs genome-wide on Dask workers (the engine behind ``denoise(..., client=)``).

    Parameters
    ----------
    noisy
        Low-coverage bigWigs, one per sample.
    model
        A trained :class:`~chromtools.models.TrackDenoiser` or the folder it was saved to. Workers
        load it from a folder, so an in-memory model is saved to a temporary folder beside the outputs.
    out_prefixes
        One output prefix per sample, as in :func:`~chromtools.tl.denoise`.
    client
        A :class:`distributed.Client`, a scheduler address (``'tcp://host:8786'``), or ``'local'`` for a
        :class:`~distributed.LocalCluster` started and closed here. Workers must see the input and
        output folders (a shared file system on a cluster).
    n_workers
        Worker processes of the local cluster (default: one per core).
    threads_per_task
        Torch threads each task uses.
    chrom_sizes, chroms, kwargs
        As in :func:`~chromtools.tl.denoise` (``extra``, ``window``, ``batch_size``, ``threshold`` ...).

    Returns
    -------
    One :class:`~chromtools.tl.DenoiseResult` per sample; ``params['tasks']`` counts its shards.
    """
    from chromtools.io import bigwig_mean
    from chromtools.models import TrackDenoiser

    from ._denoise import DenoiseResult, _check_inputs, _write_empty

    if len(noisy) != len(out_prefixes):
        msg = f"Got {len(noisy)} noisy bigWigs but {len(out_prefixes)} output prefixes; pass one prefix per sample."
        raise ValueError(msg)
    kwargs.pop("progress", None)  # workers never show a bar
    t0 = time.perf_counter()
    prefixes = [Path(p) for p in out_prefixes]
    for p in prefixes:
        p.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".chromtools-shards-", dir=prefixes[0].parent))
    try:
        if isinstance(model, TrackDenoiser):
            model_dir = work / "model"
            model.save(model_dir)
        else:
            model_dir = Path(model)
        spec = model.spec_ if isinstance(model, TrackDenoiser) else TrackDenoiser.load(model_dir).spec_
        genomes = [
            _check_inputs(
                Path(n), spec, list(kwargs.get("extra", ())), chrom_sizes, chroms, kwargs.get("check_genome", True)
            )
            for n in noisy
        ]
        # largest chromosomes first, so that a worker does not start the longest task last
        jobs = sorted(
            ((i, chrom, size) for i, sizes in enumerate(genomes) for chrom, size in sizes.items()),
            key=lambda job: -job[2],
        )
        zoom_levels = int(kwargs.pop("zoom_levels", 10))
        # each sample's mean coverage is read once here, not once per chromosome task
        means = [
            [bigwig_mean(n), *(bigwig_mean(e) for e in kwargs.get("extra", ()))]
            if spec["depth_scaling"] == "mean"
            else None
            for n in noisy
        ]
        paths = [{k: Path(f"{p}.{k}") for k in ("track.bw", "peakprob.bw", "peaks.narrowPeak")} for p in prefixes]
        with dask_client(client, n_workers) as dc:
            # every worker imports torch and loads the model once, in parallel, before the tasks start
            dc.run(_worker_model, str(model_dir))
            tag = f"{os.getpid()}-{time.monotonic_ns()}"
            shards = {
                (i, chrom): dc.submit(
                    _denoise_shard,
                    str(noisy[i]),
                    str(model_dir),
                    str(work / f"s{i}" / chrom),
                    chrom,
                    {**kwargs, "input_means": means[i]},
                    threads_per_task,
                    key=f"denoise-s{i}-{chrom}-{tag}",
                    pure=False,
                )
                for i, chrom, _ in jobs
            }
            # a bigWig is written sequentially, so each output is one task of its own: a sample's track
            # and peak-probability bigWigs are encoded on two workers at once, as soon as its shards exist
            writers = {
                (i, kind): dc.submit(
                    _write_bigwig,
                    [shards[(i, chrom)] for chrom in sizes],
                    kind,
                    dict(sizes),
                    str(paths[i][f"{kind}.bw"]),
                    zoom_levels,
                    key=f"write-s{i}-{kind}-{tag}",
                    pure=False,
                    priority=1,
                )
                for i, sizes in enumerate(genomes)
                for kind in ("track", "peakprob")
            }
            try:
                done = dict(zip(shards, dc.gather(list(shards.values())), strict=True))
                dc.gather(list(writers.values()))
            except BaseException:
                for f in writers.values():
                    if f.status == "finished":  # a complete output of a failed run is not left behind
                        Path(f.result()).unlink(missing_ok=True)
                raise
        results = []
        for i, sizes in enumerate(genomes):
            parts = [done[(i, chrom)] for chrom in sizes]
            tables = [r.peak_table for r in parts if len(r.peak_table)]
            peaks = name_peaks(pd.concat(tables, ignore_index=True)) if tables else parts[0].peak_table.iloc[:0]
            path = paths[i]["peaks.narrowPeak"]
            write_narrowpeak(peaks, path) if len(peaks) else _write_empty(path)
            params = dict(parts[0].params)
            for key in ("windows_run", "windows_total"):
                params[key] = int(np.sum([r.params.get(key, 0) for r in parts]))
            params.update(
                tasks=len(parts), threads_per_task=threads_per_task, scheduler="dask", zoom_levels=zoom_levels
            )
            results.append(
                DenoiseResult(
                    track=paths[i]["track.bw"],
                    peakprob=paths[i]["peakprob.bw"],
                    peaks=path,
                    peak_table=peaks,
                    n_bases=int(sum(sizes.values())),
                    seconds=time.perf_counter() - t0,
                    params=params,
                )
            )
        logger.info(
            "Denoised %d sample(s), %s bp, in %d Dask tasks in %.1f s",
            len(noisy),
            f"{sum(r.n_bases for r in results):,}",
            len(jobs),
            time.perf_counter() - t0,
        )
        return results
    finally:
        shutil.rmtree(work, ignore_errors=True)
