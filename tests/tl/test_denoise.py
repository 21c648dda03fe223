from __future__ import annotations

import numpy as np
import pandas as pd
import pyBigWig
import pytest

import chromtools as ct


@pytest.fixture(scope="module")
def denoised(tiny_model, tiny_tracks, tmp_path_factory):
    out = tmp_path_factory.mktemp("denoised")
    return ct.tl.denoise(tiny_tracks.noisy, tiny_model, out / "tiny", progress=False, accelerator="cpu")


def test_outputs_cover_every_chromosome_to_its_end(denoised, tiny_tracks, tiny_model):
    sizes = ct.io.read_chrom_sizes(tiny_tracks.chrom_sizes)
    for path in (denoised.track, denoised.peakprob):
        assert ct.io.read_chrom_sizes(path) == sizes
    # chr3 is 123,457 bp: not a multiple of the window; its last partial window is predicted, not dropped
    tail = ct.io.read_bigwig(denoised.track, "chr3", 123_457 - 3_000, 123_457)
    assert (tail > 0).mean() > 0.9
    probs = ct.io.read_bigwig(denoised.peakprob, "chr1")
    assert probs.min() >= 0 and probs.max() <= 1
    peaks = ct.io.read_narrowpeak(denoised.peaks, chrom_sizes=sizes)
    assert len(peaks) == len(denoised.peak_table) > 5
    assert ((peaks["peak"] >= 0) & (peaks["peak"] < peaks["end"] - peaks["start"])).all()
    threshold = tiny_model.spec_["peak_threshold"]
    assert denoised.params["threshold"] == threshold and 0 < threshold < 1
    assert (peaks["end"] - peaks["start"]).min() >= 50
    # narrowPeak columns: score = 1000 x (1 - calibrated FDR), p from the summit's Poisson test, q = -log10 FDR
    assert peaks["score"].between(0, 1000).all() and peaks["score"].nunique() > 1
    assert (peaks["pValue"] > 0).all() and (peaks["qValue"] >= 0).all()
    fdr = 10 ** -peaks["qValue"].to_numpy()
    assert np.allclose(peaks["score"], np.round(1000 * (1 - fdr)), atol=1)
    strong = peaks["signalValue"] > peaks["signalValue"].median()
    assert peaks.loc[strong, "pValue"].mean() > peaks.loc[~strong, "pValue"].mean()
    assert denoised.n_bases == sum(sizes.values()) and denoised.bases_per_second > 0


def test_denoised_track_beats_noisy_input(denoised, tiny_tracks):
    noisy = ct.metrics.evaluate_denoising(
        tiny_tracks.clean, tiny_tracks.peaks, track=tiny_tracks.noisy, chroms=["chr3"]
    )
    model = ct.metrics.evaluate_denoising(
        tiny_tracks.clean,
        tiny_tracks.peaks,
        track=denoised.track,
        peakprob=denoised.peakprob,
        peaks=denoised.peaks,
        chroms=["chr3"],
    )
    assert model["pearson"] > noisy["pearson"]
    assert model["auprc"] > 0.4 and model["peak_f1"] > 0.5


def test_denoised_track_is_in_clean_units(denoised, tiny_tracks, tiny_model):
    # against the noisy track times the depth ratio (the same units): lower error, and a clean-like mean
    ratio = tiny_model.spec_["depth_ratio"]
    noisy = ct.metrics.evaluate_denoising(
        tiny_tracks.clean, tiny_tracks.peaks, track=tiny_tracks.noisy, chroms=["chr3"], scale_track=ratio
    )
    model = ct.metrics.evaluate_denoising(tiny_tracks.clean, tiny_tracks.peaks, track=denoised.track, chroms=["chr3"])
    assert model["mse"] < noisy["mse"]
    clean = ct.io.read_bigwig(tiny_tracks.clean, "chr3")
    track = ct.io.read_bigwig(denoised.track, "chr3")
    noisy_mean = ct.io.read_bigwig(tiny_tracks.noisy, "chr3").mean()
    # the clean track is ~16x deeper than the noisy input; the denoised one is on the clean side of that
    assert clean.mean() / noisy_mean > 10 and 0.5 < track.mean() / clean.mean() < 2
    # the clean depth of the input; the validation calibration is applied before it
    assert denoised.params["output_scale"] == pytest.approx(ct.io.bigwig_mean(tiny_tracks.noisy) * ratio)


def test_blacklist_and_empty_peaks_round_trip(tiny_model, tiny_tracks, denoised, tmp_path):
    first = denoised.peak_table.iloc[0]
    bl = tmp_path / "blacklist.bed"
    bl.write_text(f"{first['chrom']}\t{first['start']}\t{first['start'] + 1}\n")
    res = ct.tl.denoise(tiny_tracks.noisy, tiny_model, tmp_path / "bl", blacklist=bl, progress=False)
    assert len(res.peak_table) == len(denoised.peak_table) - 1 and res.params["peaks_blacklisted"] == 1
    # everything blacklisted: an empty narrowPeak, read back as an empty table with a warning
    sizes = ct.io.read_chrom_sizes(tiny_tracks.chrom_sizes)
    everything = pd.DataFrame({"chrom": list(sizes), "start": 0, "end": list(sizes.values())})
    none = ct.tl.denoise(tiny_tracks.noisy, tiny_model, tmp_path / "none", blacklist=everything, progress=False)
    assert len(none.peak_table) == 0 and none.peaks.read_text() == ""
    with pytest.warns(UserWarning, match="contains no peaks"):
        assert len(ct.io.read_peaks(none.peaks)) == 0


def test_output_does_not_depend_on_window_size(tiny_model, tiny_tracks, denoised, tmp_path):
    other = ct.tl.denoise(tiny_tracks.noisy, tiny_model, tmp_path / "w", window=4_096, batch_size=3, progress=False)
    for chrom in ("chr1", "chr3"):
        a = ct.io.read_bigwig(denoised.track, chrom)
        b = ct.io.read_bigwig(other.track, chrom)
        assert np.abs(a - b).max() <= 0.1 + 1e-6  # values are rounded to 0.1; float noise may flip a rounding
        assert np.mean(a != b) < 1e-3
        pa, pb = ct.io.read_bigwig(denoised.peakprob, chrom), ct.io.read_bigwig(other.peakprob, chrom)
        assert np.abs(pa - pb).max() <= 0.001 + 1e-6
    assert abs(len(other.peak_table) - len(denoised.peak_table)) <= 1


def test_empty_windows_use_the_cached_prediction(tiny_model, tiny_tracks, tmp_path):
    # a genome with a long stretch without coverage: those windows are not run through the network
    noisy = ct.io.read_bigwig(tiny_tracks.noisy, "chr1")
    noisy[100_000:300_000] = 0
    path = ct.io.write_bigwig(tmp_path / "gap.bw", {"chr1": noisy}, {"chr1": noisy.size})
    res = ct.tl.denoise(path, tiny_model, tmp_path / "gap", window=8_192, check_genome=False, progress=False)
    assert res.params["windows_run"] < res.params["windows_total"]
    full = ct.tl.denoise(path, tiny_model, tmp_path / "gap_full", window=4_096, check_genome=False, progress=False)
    a, b = ct.io.read_bigwig(res.track, "chr1"), ct.io.read_bigwig(full.track, "chr1")
    assert np.abs(a - b).max() <= 0.1 + 1e-6


def test_bad_inputs(tiny_model, tiny_tracks, tmp_path):
    # the same chromosome names but other lengths than the model's training genome
    other = ct.io.write_bigwig(tmp_path / "hg38like.bw", {"chr1": np.ones(500)}, {"chr1": 500_000})
    with pytest.raises(ValueError, match="different assemblies"):
        ct.tl.denoise(other, tiny_model, tmp_path / "x", progress=False)
    with pytest.raises(KeyError, match=r"absent from the chromosome sizes"):
        ct.tl.denoise(tiny_tracks.noisy, tiny_model, tmp_path / "x", chroms=["chr9"], progress=False)
    bad_sizes = dict(ct.io.read_chrom_sizes(tiny_tracks.chrom_sizes), chr2=1)
    with pytest.raises(ValueError, match="same genome assembly"):
        ct.tl.denoise(tiny_tracks.noisy, tiny_model, tmp_path / "x", chrom_sizes=bad_sizes, progress=False)
    empty = tmp_path / "empty.bw"
    bw = pyBigWig.open(str(empty), "w")
    bw.addHeader([("chr1", 400_000)])
    bw.close()
    with pytest.raises(ValueError, match="stores no data"):
        ct.tl.denoise(empty, tiny_model, tmp_path / "x", progress=False)
    with pytest.raises(ValueError, match="multiple of the model's bin size"):
        ct.tl.denoise(tiny_tracks.noisy, tiny_model, tmp_path / "x", window=1_000, progress=False)
    with pytest.raises(ValueError, match="extra input track"):
        ct.tl.denoise(tiny_tracks.noisy, tiny_model, tmp_path / "x", extra=[tiny_tracks.noisy], progress=False)
    assert not any(p.name.startswith("x.") for p in tmp_path.iterdir())


def test_any_genome_via_its_sizes(tiny_model, tmp_path):
    # a model trained on one genome denoises another (e.g. mouse), given the names do not clash
    rng = np.random.default_rng(0)
    track = {"mmChr7": rng.poisson(0.3, 70_000).astype(np.float32)}
    path = ct.io.write_bigwig(tmp_path / "mouse.bw", track, {"mmChr7": 70_000})
    res = ct.tl.denoise(path, tiny_model, tmp_path / "mouse", progress=False)
    assert ct.io.read_chrom_sizes(res.track) == {"mmChr7": 70_000}
