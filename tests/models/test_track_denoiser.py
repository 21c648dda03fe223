from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import chromtools as ct
from chromtools.models._track_data import PEAKS_KEY, TARGET_KEY, X_KEY, TrackDataModule
from chromtools.models._track_module import masked_pearson
from chromtools.models._track_nets import AtacWorksNet, BinnedDilatedNet


def test_atacworks_architecture_is_the_published_one():
    net = AtacWorksNet()
    assert 215_000 < sum(p.numel() for p in net.parameters()) < 225_000
    assert len(net.regression) == 5 and len(net.peak) == 2
    conv = net.regression[1].conv2
    assert conv.kernel_size == (51,) and conv.dilation == (8,) and conv.out_channels == 15
    # the peak tower reads the one-channel denoised track
    assert net.peak[0].conv1.in_channels == 1
    track, logits = net(torch.rand(2, 1, 1_000))
    assert track.shape == logits.shape == (2, 1_000) and (track >= 0).all()


def test_default_net_is_binned_and_cheaper():
    net = BinnedDilatedNet()
    aw = AtacWorksNet()
    assert net.bin_size == 16 and net.receptive_field > 1.5 * aw.receptive_field
    x = torch.rand(1, 1, 4_096)
    track, logits, context = net(x)
    assert context.shape == (1, 4_096) and (context >= 0).all()
    assert track.shape == (1, 4_096) and (track >= 0).all()
    with pytest.raises(ValueError, match="multiple of bin_size"):
        net(torch.rand(1, 1, 4_100))


def test_pearson_and_loss_terms(small_arch):
    rng = np.random.default_rng(0)
    a, b = rng.random((2, 50)), rng.random((2, 50))
    mask = np.ones((2, 50))
    mask[:, :10] = 0
    r = masked_pearson(torch.tensor(a), torch.tensor(b), torch.tensor(mask))
    assert np.isclose(float(r), np.corrcoef(a[:, 10:].ravel(), b[:, 10:].ravel())[0, 1])
    module = ct.models.TrackDenoiser._module_cls(1, "default", **small_arch)
    target = torch.rand(2, 64) * 5
    tensors = {
        TARGET_KEY: target,
        PEAKS_KEY: (target > 2.5).float(),
        "mask": torch.ones(2, 64),
        "x": torch.zeros(2, 1, 64),
    }
    perfect = {"track": target, "context": target, "logits": torch.where(target > 2.5, 20.0, -20.0)}
    out = module.loss(tensors, perfect, perfect)
    assert float(out.extra_metrics["regression"]) < 1e-10 and abs(float(out.extra_metrics["pearson"]) - 1) < 1e-6
    assert float(out.extra_metrics["track_mse"]) < 1e-10 and float(out.extra_metrics["log_mse"]) < 1e-10
    assert float(out.loss) < 1e-3


def test_setup_tracks_split_and_windows(tiny_tracks):
    setup = ct.models.TrackDenoiser.setup_tracks(
        tiny_tracks.noisy,
        tiny_tracks.clean,
        tiny_tracks.peaks,
        val_chroms=["chr2"],
        holdout_chroms=["chr3"],
        window=10_000,
    )
    assert setup.train_chroms == ["chr1"] and setup.val_chroms == ["chr2"]
    summary = setup.summary()
    assert summary.loc["train", "windows"] <= 40 and summary.loc["validation", "windows"] <= 20
    assert summary.loc["train", "peaks"] > 10
    dm = TrackDataModule(setup, pad=512, bin_size=16, batch_size=2, jitter=False)
    batch = next(iter(dm.val_dataloader()))
    assert (
        batch[X_KEY].shape == (2, 1, 11_024) and batch["mask"][:, 512:-512].all() and not batch["mask"][:, :512].any()
    )
    # the clean target is normalised by the clean track's mean coverage
    assert 0.2 < float(batch[TARGET_KEY][batch["mask"] > 0].mean()) < 20


def test_training_learns_and_keeps_best_epoch(tiny_model):
    auprc = tiny_model.history["auprc_validation"].astype(float).iloc[:, 0]
    assert auprc.max() > 0.5  # peak bases are ~3 % of the genome: a random ranking scores ~0.03
    assert tiny_model.best_score_ == pytest.approx(auprc.max(), rel=1e-6)
    assert tiny_model.is_trained_


def test_training_is_seeded(tiny_tracks):
    def run():
        setup = ct.models.TrackDenoiser.setup_tracks(
            tiny_tracks.noisy, tiny_tracks.clean, tiny_tracks.peaks, val_chroms=["chr2"], window=8_192
        )
        m = ct.models.TrackDenoiser(setup, channels=8, dilations=(1, 2))
        m.train(max_epochs=1, batch_size=8, accelerator="cpu", progress=False, random_state=7)
        return torch.cat([p.detach().flatten() for p in m.module.parameters()])

    assert torch.equal(run(), run())


def test_save_load_keeps_spec_and_predictions(tiny_model, tmp_path):
    tiny_model.save(tmp_path / "m")
    spec = json.loads((tmp_path / "m" / "spec.json").read_text())
    assert spec["window"] == 8_192 and spec["val_chroms"] == ["chr2"] and spec["genome"]["chr3"] == 123_457
    loaded = ct.models.TrackDenoiser.load(tmp_path / "m")
    assert loaded.spec == tiny_model.spec
    x = np.random.default_rng(0).random((2, 1, 8_192 + 2 * spec["pad"])).astype(np.float32)
    a, b = tiny_model.predict_windows(x), loaded.predict_windows(x)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    with pytest.raises(RuntimeError, match="no training data attached"):
        loaded.train(max_epochs=1)


def test_load_refuses_incompatible_spec(tiny_model, tmp_path):
    tiny_model.save(tmp_path / "m")
    old = tiny_model.spec_["spec_version"]
    tiny_model.spec_["spec_version"] = 99
    try:
        tiny_model.save(tmp_path / "future", overwrite=True)
    finally:
        tiny_model.spec_["spec_version"] = old
    with pytest.raises(ValueError, match="spec version 99"):
        ct.models.TrackDenoiser.load(tmp_path / "future")
    with pytest.raises(FileNotFoundError, match="model.pt is missing"):
        ct.models.TrackDenoiser.load(tmp_path)


def test_validation_without_peaks_warns_not_crashes(tiny_tracks, tmp_path):
    # peaks only on chr1: the validation chromosome has one class (AtacWorks crashed here)
    peaks = ct.io.read_bed(tiny_tracks.peaks)
    only_chr1 = ct.io.write_bed(peaks.loc[peaks["chrom"] == "chr1"], tmp_path / "chr1.bed")
    setup = ct.models.TrackDenoiser.setup_tracks(
        tiny_tracks.noisy, tiny_tracks.clean, only_chr1, val_chroms=["chr2"], window=16_384
    )
    m = ct.models.TrackDenoiser(setup, channels=8, dilations=(1, 2))
    with pytest.warns(UserWarning, match="carry no labelled peak"):
        m.train(max_epochs=2, accelerator="cpu", progress=False)
    assert m.spec_["monitor"] == "validation_loss" and "auprc_validation" not in m.history


def test_bad_training_inputs(tiny_tracks, tmp_path):
    setup = ct.models.TrackDenoiser.setup_tracks
    with pytest.raises(KeyError, match="'chrX' is not in the tracks' chromosome sizes"):
        setup(tiny_tracks.noisy, tiny_tracks.clean, tiny_tracks.peaks, val_chroms=["chrX"])
    other = tmp_path / "other.bed"
    other.write_text("chr7\t100\t200\nchr8\t100\t300\n")
    with pytest.raises(ValueError, match="has no peak on the chromosomes"):
        setup(tiny_tracks.noisy, tiny_tracks.clean, other, val_chroms=["chr2"])
    short = ct.io.write_bigwig(tmp_path / "short.bw", {"chr1": np.ones(10)}, {"chr1": 10, "chr2": 200_000, "chr3": 5})
    with pytest.raises(ValueError, match="same genome assembly"):
        setup(tiny_tracks.noisy, short, tiny_tracks.peaks, val_chroms=["chr2"])
    with pytest.raises(ValueError, match="one clean track and one peaks file per noisy track"):
        setup([tiny_tracks.noisy, tiny_tracks.noisy], [tiny_tracks.clean], [tiny_tracks.peaks], val_chroms=["chr2"])
    with pytest.raises(ValueError, match="at least one validation chromosome"):
        setup(tiny_tracks.noisy, tiny_tracks.clean, tiny_tracks.peaks, val_chroms=[])
    with pytest.raises(TypeError, match="trains on bigWig tracks"):
        ct.models.TrackDenoiser.setup_anndata(None)


def test_several_pairs_and_extra_channels(tiny_tracks, tmp_path):
    setup = ct.models.TrackDenoiser.setup_tracks(
        [tiny_tracks.noisy, tiny_tracks.noisy],
        [tiny_tracks.clean, tiny_tracks.clean],
        [tiny_tracks.peaks, tiny_tracks.narrowpeak],
        extra=[[tiny_tracks.noisy], [tiny_tracks.noisy]],
        val_chroms=["chr2"],
        window=16_384,
    )
    assert setup.n_channels == 2 and len(setup.train_windows) == 2 * len(np.unique(setup.train_windows[:, 1:], axis=0))
    m = ct.models.TrackDenoiser(setup, channels=8, dilations=(1, 2))
    m.train(max_epochs=1, accelerator="cpu", progress=False)
    assert m.spec_["n_channels"] == 2 and len(m.spec_["training_pairs"]) == 2


def test_three_disjoint_regions(tiny_tracks):
    setup = ct.models.TrackDenoiser.setup_tracks(
        tiny_tracks.noisy,
        tiny_tracks.clean,
        tiny_tracks.peaks,
        val_chroms=["chr1:300000-400000"],
        holdout_chroms=["chr3"],
        window=8_192,
    )
    assert setup.train_chroms == ["chr1:0-300000", "chr2"] and setup.val_chroms == ["chr1:300000-400000"]
    assert setup.holdout_chroms == ["chr3"]
    # jittered training windows never put loss on the validation region; validation windows stay inside theirs
    dm = TrackDataModule(setup, pad=512, bin_size=16, batch_size=1, jitter=True)
    torch.manual_seed(0)
    for i in np.flatnonzero(setup.train_windows[:, 1] == 0):
        item = dm.train_set[int(i)]
        _, _, start, rs, re = setup.train_windows[i]
        assert rs == 0 and re == 300_000
        assert item["mask"].sum() <= min(8_192, 300_000 - start + 4_096)
    val_rows = setup.val_windows
    assert (val_rows[:, 2] >= 300_000).all() and (val_rows[:, 2] < 400_000).all()
    last = dm.val_set[len(val_rows) - 1]
    assert int(last["mask"].sum()) == 400_000 - int(val_rows[-1, 2])
    with pytest.raises(ValueError, match="in both the validation and the holdout"):
        ct.models.TrackDenoiser.setup_tracks(
            tiny_tracks.noisy, tiny_tracks.clean, tiny_tracks.peaks, val_chroms=["chr1:0-1000"], holdout_chroms=["chr1"]
        )
    with pytest.raises(ValueError, match="also used for validation or holdout"):
        ct.models.TrackDenoiser.setup_tracks(
            tiny_tracks.noisy, tiny_tracks.clean, tiny_tracks.peaks, val_chroms=["chr2"], train_chroms=["chr2:5-10"]
        )


def test_choice_and_calibration_on_validation_region(tiny_model):
    spec = tiny_model.spec_
    assert spec["val_chroms"] == ["chr2"] and spec["holdout_chroms"] == ["chr3"] and spec["train_chroms"] == ["chr1"]
    assert 0 < spec["peak_threshold"] < 1 and 0.3 < spec["track_scale"] < 3
    val = spec["validation"]
    assert (
        val["peak_f1"] == pytest.approx(max(val["peak_f1_per_threshold_and_gap"].values()), abs=1e-4)
        and val["peak_f1"] > 0.3
    )
    assert spec["peak_merge_gap"] in (0, 50, 150, 300, 600)
    assert val["track_mse_after_scale"] <= val["track_mse_before_scale"] + 1e-9
    fdr = np.asarray(spec["fdr"])
    assert fdr.shape == (101,) and (np.diff(fdr) <= 1e-12).all() and 0 <= fdr.min() <= fdr.max() <= 1


def test_track_calibration_is_fitted_on_validation_and_applied(tiny_model):
    from chromtools.models._track_denoiser import CALIBRATION_WIDTHS

    spec, val = tiny_model.spec_, tiny_model.spec_["validation"]
    cal = spec["track_calibration"]
    assert cal["width"] in CALIBRATION_WIDTHS and len(cal["coef"]) == len(cal["features"]) == 4
    # the plain scale is one candidate (coefficients [scale, 0, 0, 0]): the chosen one is never worse
    assert cal["mse"] <= val["track_mse_after_scale"] + 1e-9
    assert cal["mse"] == pytest.approx(min([val["track_mse_after_scale"], *cal["mse_per_width"].values()]))
    rng = np.random.default_rng(0)
    x = np.log1p(rng.poisson(2.0, (2, spec["n_channels"], 4_096)).astype(np.float32))
    raw, probs = tiny_model.predict_windows(x)
    track, probs2 = tiny_model.predict_windows(x, calibrated=True)
    np.testing.assert_array_equal(probs, probs2)
    assert (track >= 0).all()
    # by hand: a*t + b*s + c*p*s + d*p*t, s the depth-normalised noisy input averaged over `width` bases
    a, b, c, d = cal["coef"]
    w = cal["width"]
    s = np.convolve(np.expm1(x[0, 0]), np.ones(w) / w, mode="same") if w > 1 else np.expm1(x[0, 0])
    expected = np.maximum(a * raw[0] + b * s + c * probs[0] * s + d * probs[0] * raw[0], 0)
    np.testing.assert_allclose(track[0], expected, rtol=1e-4, atol=1e-4)
    # a model saved before the calibration existed falls back to its scale
    old = dict(spec)
    del old["track_calibration"]
    tiny_model.spec_ = old
    try:
        np.testing.assert_allclose(
            tiny_model.predict_windows(x, calibrated=True)[0], raw * spec["track_scale"], rtol=1e-6
        )
    finally:
        tiny_model.spec_ = spec


def test_anchored_track_mixes_input_and_context(small_arch):
    # at initialisation: log1p(track) = (log1p(noisy / mean) + log1p(context)) / 2
    net = BinnedDilatedNet(**small_arch)
    x = torch.log1p(torch.rand(2, 1, 1_024) * 20)
    track, _, context = net(x)
    z = 0.5 * x[:, 0] + 0.5 * torch.log1p(context)
    big = z > 1.0  # above ~0.3 the softplus floor is the identity
    assert big.float().mean() > 0.3 and torch.allclose(torch.log1p(track)[big], z[big], atol=1e-4)
    # the track follows the per-base input: a base with more noisy coverage gets more denoised coverage
    x2 = x.clone()
    x2[0, 0, 500] += 2.0
    assert net(x2)[0][0, 500] > track[0, 500] + 1


def test_depth_scaling_none_uses_the_training_means_in_training_too(tiny_tracks, tmp_path):
    # a second pair at twice the depth: 'none' divides both by the same (mean) numbers, as inference will
    double = {c: 2 * ct.io.read_bigwig(tiny_tracks.noisy, c) for c in ("chr1", "chr2", "chr3")}
    sizes = ct.io.read_chrom_sizes(tiny_tracks.noisy)
    noisy2 = ct.io.write_bigwig(tmp_path / "double.bw", double, sizes)
    setup = ct.models.TrackDenoiser.setup_tracks(
        [tiny_tracks.noisy, noisy2], [tiny_tracks.clean] * 2, [tiny_tracks.peaks] * 2, val_chroms=["chr2"], window=8_192
    )
    p1, p2 = setup.pairs
    assert p2.noisy_mean == pytest.approx(2 * p1.noisy_mean, rel=1e-4)
    assert setup.scales(p1, "mean")[0] != setup.scales(p2, "mean")[0]
    assert setup.scales(p1, "none")[0] == setup.scales(p2, "none")[0] == pytest.approx(1.5 * p1.noisy_mean)
    model = ct.models.TrackDenoiser(setup, depth_scaling="none", channels=8, dilations=(1, 2))
    assert model.spec_["noisy_mean"] == pytest.approx(setup.scales(p1, "none")[0])
    assert model.spec_["clean_mean"] == pytest.approx(setup.scales(p1, "none")[1])
    dm = TrackDataModule(setup, pad=512, bin_size=16, batch_size=1, jitter=False, depth_scaling="none")
    n = len(setup.train_windows) // 2  # the second pair's windows follow the first's
    a, b = dm.train_set[0][X_KEY], dm.train_set[n][X_KEY]
    assert torch.allclose(torch.expm1(b), 2 * torch.expm1(a), rtol=1e-4, atol=1e-4)
