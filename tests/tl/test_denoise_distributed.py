"""Genome-wide denoising on Dask workers: same files, value for value, as one process."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import chromtools as ct

pytest.importorskip("distributed", reason="the Dask path needs the 'scale' extra (dask[distributed])")

SIZES = {"chr1": 700_000, "chr2": 500_000, "chr3": 300_000}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dask_denoise")
    sim = ct.datasets.simulate_tracks(folder / "sim", chrom_sizes=SIZES, random_state=3)
    data = ct.models.TrackDenoiser.setup_tracks(sim.noisy, sim.clean, sim.peaks, val_chroms=["chr3"])
    torch.manual_seed(0)
    model = ct.models.TrackDenoiser(data)
    model.train(max_epochs=1, progress=False)
    model.save(folder / "model")
    return sim, folder


def _same_outputs(a, b):
    for chrom in SIZES:
        for kind in ("track", "peakprob"):
            x = ct.io.read_bigwig(getattr(a, kind), chrom)
            y = ct.io.read_bigwig(getattr(b, kind), chrom)
            assert np.array_equal(x, y), (chrom, kind)
    assert a.peaks.read_text() == b.peaks.read_text()


def test_local_cluster_matches_single_process(trained, leftovers):
    sim, folder = trained
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers' setting (threads_per_task=1): oneDNN's sums depend on the thread count
    try:
        single = ct.tl.denoise(sim.noisy, folder / "model", folder / "one" / "s", progress=False)
    finally:
        torch.set_num_threads(threads)
    # two samples at once (the same bigWig twice under different prefixes) on 2 worker processes
    many = ct.tl.denoise(
        [sim.noisy, sim.noisy],
        folder / "model",
        [folder / "dask" / "a", folder / "dask" / "b"],
        client="local",
        n_workers=2,
    )
    assert len(many) == 2
    for result in many:
        _same_outputs(single, result)
        assert result.params["scheduler"] == "dask" and result.params["tasks"] == len(SIZES)
        assert result.n_bases == sum(SIZES.values())
    assert len(single.peak_table) > 0
    assert leftovers(folder / "dask") == []
    assert not [p for p in (folder / "dask").iterdir() if p.name.startswith(".chromtools-shards")]


def test_blacklist_applies_on_workers_and_in_lists(trained):
    sim, folder = trained
    single = ct.tl.denoise(sim.noisy, folder / "model", folder / "bl1" / "s", progress=False)
    first = single.peak_table.iloc[0]
    blacklist = single.peak_table.iloc[[0]][["chrom", "start", "end"]]
    with_bl = ct.tl.denoise(sim.noisy, folder / "model", folder / "bl2" / "s", blacklist=blacklist, progress=False)
    assert len(with_bl.peak_table) == len(single.peak_table) - 1
    on_dask = ct.tl.denoise(
        [sim.noisy], folder / "model", [folder / "bl3" / "s"], blacklist=blacklist, client="local", n_workers=1
    )[0]
    kept = on_dask.peak_table
    assert len(kept) == len(single.peak_table) - 1
    assert not ((kept["chrom"] == first["chrom"]) & (kept["start"] == first["start"])).any()


def test_input_means_is_for_one_bigwig(trained):
    sim, folder = trained
    with pytest.raises(ValueError, match="one mean per input track"):
        ct.tl.denoise(sim.noisy, folder / "model", folder / "m" / "s", input_means=[1.0, 2.0], progress=False)
    with pytest.raises(ValueError, match="describes one bigWig"):
        ct.tl.denoise([sim.noisy], folder / "model", [folder / "m" / "t"], input_means=[1.0], progress=False)
    mean = ct.io.bigwig_mean(sim.noisy)
    given = ct.tl.denoise(
        sim.noisy, folder / "model", folder / "m" / "u", chroms=["chr3"], input_means=[mean], progress=False
    )
    read = ct.tl.denoise(sim.noisy, folder / "model", folder / "m" / "v", chroms=["chr3"], progress=False)
    assert given.params["input_scale"] == read.params["input_scale"]
    assert np.array_equal(ct.io.read_bigwig(given.track, "chr3"), ct.io.read_bigwig(read.track, "chr3"))


def test_list_without_client_runs_in_process(trained):
    sim, folder = trained
    out = ct.tl.denoise([sim.noisy], folder / "model", [folder / "seq" / "a"], chroms=["chr3"], progress=False)
    assert isinstance(out, list) and out[0].n_bases == SIZES["chr3"]


def test_errors_name_the_fix(trained):
    sim, folder = trained
    with pytest.raises(ValueError, match="one prefix per sample"):
        ct.tl.denoise([sim.noisy, sim.noisy], folder / "model", [folder / "x"], client="local")
    with pytest.raises(TypeError, match="scheduler address or 'local'"):
        ct.tl.denoise(sim.noisy, folder / "model", folder / "y" / "s", client=3)
