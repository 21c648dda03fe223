from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest

import chromtools as ct


def test_tracks_figure(sim_tracks):
    fig = ct.pl.tracks(
        {"noisy": sim_tracks.noisy, "clean": sim_tracks.clean, "array": np.ones(20_000)},
        "chr1:100000-120000",
        peaks={"peaks": sim_tracks.peaks, "narrow": ct.io.read_narrowpeak(sim_tracks.narrowpeak)},
        show=False,
    )
    assert len(fig.axes) == 4
    assert fig.axes[-1].get_xlim() == (100_000, 120_000)
    assert [t.get_text() for t in fig.axes[-1].get_yticklabels()] == ["peaks", "narrow"]
    plt.close(fig)


def test_tracks_into_given_axes_and_errors(sim_tracks):
    fig, axes = plt.subplots(2, 1)
    out = ct.pl.tracks(
        {"noisy": sim_tracks.noisy}, ("chr2", 0, 50_000), peaks={"p": sim_tracks.peaks}, ax=axes, show=False
    )
    assert out is fig
    with pytest.raises(ValueError, match="ax needs 2 axes"):
        ct.pl.tracks({"noisy": sim_tracks.noisy}, "chr2:0-500", peaks={"p": sim_tracks.peaks}, ax=axes[:1], show=False)
    with pytest.raises(ValueError, match="region with coordinates"):
        ct.pl.tracks({"noisy": sim_tracks.noisy}, "chr2", show=False)
    with pytest.raises(ValueError, match="cover the region exactly"):
        ct.pl.tracks({"a": np.ones(5)}, "chr2:0-500", show=False)
    plt.close("all")
