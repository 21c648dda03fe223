"""Genome-wide denoising sharded over Dask workers: one task per (sample, chromosome), then one merge.

Each task runs :func:`chromtools.tl.denoise` on one chromosome of one sample and writes its own
shard files; the driver then streams the shards, in the genome order of the input, into one
denoised bigWig, one peak-probability bigWig and one narrowPeak per sample, each written to a
temporary file and renamed. Windows never cross chromosomes and a chromosome's batches are the
same in a shard as in a single-process run, so the merged output is identical, value for value,
to what one process writes. The scheduling, retries and placement are Dask's.
"""

from __future__ import annotations

import contextlib
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

from chromtools.io import BigWigReader, BigWigWriter, write_narrowpeak

from ._peaks import name_peaks

if TYPE_CHECKING:
    from distributed import Client

    from chromtools._utils import PathLike
    from chromtools.models import TrackDenoiser

    from ._denoise import DenoiseResult

logger = logging.getLogger(__name__)
MERGE_BLOCK = 10_000_000  # bases read from a shard bigWig at a time while merging (40 MB of float32)


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


_WORKER_MODELS: dict[tuple[str, float], TrackDenoiser] = {}  # per worker process: a model loads once, not per task


def _denoise_shard(noisy: str, model_dir: str, prefix: str, chrom: str, kwargs: dict, threads: int) -> DenoiseResult:
    """Worker task: denoise one chromosome of one sample into its own shard files."""
    import torch

    from ._denoise import denoise

    model = _worker_model(model_dir)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return denoise(noisy, model, prefix, chroms=[chrom], progress=False, **kwargs)
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


def _merge_bigwigs(shards: Mapping[str, Path], sizes: Mapping[str, int], out: Path) -> None:
    """Stream per-chromosome shard bigWigs, in ``sizes`` order, into one bigWig (atomic)."""
    with BigWigWriter(out, dict(sizes)) as writer:
        for chrom, size in sizes.items():
            with BigWigReader(shards[chrom]) as reader:
                for start in range(0, size, MERGE_BLOCK):
                    end = min(size, start + MERGE_BLOCK)
                    writer.add(chrom, reader.values(chrom, start, end), start=start)


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
    from chromtools.models import TrackDenoiser

    from ._denoise import DenoiseResult, _check_inputs, _write_empty

    if len(noisy) != len(out_prefixes):
        msg = f"Got {len(noisy)} noisy bigWigs but {len(out_prefixes)} output prefixes; pass one prefix per sample."
        raise ValueError(msg)
    kwargs.pop("progress", None)  # workers never show a bar
    t0 = time.perf_counter()
    out_prefixes = [Path(p) for p in out_prefixes]
    for p in out_prefixes:
        p.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".chromtools-shards-", dir=out_prefixes[0].parent))
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
        with dask_client(client, n_workers) as dc:
            # every worker imports torch and loads the model once, in parallel, before the tasks start
            dc.run(_worker_model, str(model_dir))
            futures = {
                (i, chrom): dc.submit(
                    _denoise_shard,
                    str(noisy[i]),
                    str(model_dir),
                    str(work / f"s{i}" / chrom),
                    chrom,
                    kwargs,
                    threads_per_task,
                    key=f"denoise-s{i}-{chrom}-{os.getpid()}-{time.monotonic_ns()}",
                    pure=False,
                )
                for i, chrom, _ in jobs
            }
            shards = dict(zip(futures, dc.gather(list(futures.values())), strict=True))
        results = []
        for i, sizes in enumerate(genomes):
            parts = [shards[(i, chrom)] for chrom in sizes]
            prefix = out_prefixes[i]
            paths = {k: Path(f"{prefix}.{k}") for k in ("track.bw", "peakprob.bw", "peaks.narrowPeak")}
            _merge_bigwigs({c: r.track for c, r in zip(sizes, parts, strict=True)}, sizes, paths["track.bw"])
            _merge_bigwigs({c: r.peakprob for c, r in zip(sizes, parts, strict=True)}, sizes, paths["peakprob.bw"])
            tables = [r.peak_table for r in parts if len(r.peak_table)]
            peaks = name_peaks(pd.concat(tables, ignore_index=True)) if tables else parts[0].peak_table.iloc[:0]
            write_narrowpeak(peaks, paths["peaks.narrowPeak"]) if len(peaks) else _write_empty(paths["peaks.narrowPeak"])
            params = dict(parts[0].params)
            for key in ("windows_run", "windows_total"):
                params[key] = int(np.sum([r.params.get(key, 0) for r in parts]))
            params.update(tasks=len(parts), threads_per_task=threads_per_task, scheduler="dask")
            results.append(
                DenoiseResult(
                    track=paths["track.bw"],
                    peakprob=paths["peakprob.bw"],
                    peaks=paths["peaks.narrowPeak"],
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
