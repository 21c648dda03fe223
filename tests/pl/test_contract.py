"""What every ct.pl function promises: show=/save=, a Figure back when not shown, None when shown, nothing left open."""

from __future__ import annotations

import inspect
import re

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
from matplotlib.figure import Figure

import chromtools as ct


@pytest.fixture
def calls(sim_tracks, mapped, kmeans_modules):
    ref, query = mapped
    for obj in (ref, query):
        obj.obsm["X_2d"] = obj.obsm["X_reference"][:, :2]
    genes = list(kmeans_modules.var_names[kmeans_modules.var["vrnn_selected"].to_numpy()][:2])
    return {
        "tracks": lambda **kw: ct.pl.tracks(
            {"noisy": sim_tracks.noisy}, "chr1:100000-120000", peaks={"p": sim_tracks.peaks}, **kw
        ),
        "mapping_umap": lambda **kw: ct.pl.mapping_umap(query, ref, color=["dataset", "batch"], basis="X_2d", **kw),
        "confusion_matrix": lambda **kw: ct.pl.confusion_matrix(query, "cell_type", "cell_type_pred", **kw),
        "vrnn_trajectories": lambda **kw: ct.pl.vrnn_trajectories(kmeans_modules, **kw),
        "vrnn_umap": lambda **kw: ct.pl.vrnn_umap(kmeans_modules, genes=genes, **kw),
        "vrnn_genes": lambda **kw: ct.pl.vrnn_genes(kmeans_modules, genes, **kw),
        "vrnn_module_timing": lambda **kw: ct.pl.vrnn_module_timing(kmeans_modules, **kw),
    }


@pytest.fixture(autouse=True)
def _no_open_figures():
    plt.close("all")
    yield
    plt.close("all")


def test_every_plot_is_covered(calls):
    assert sorted(calls) == sorted(ct.pl.__all__)


@pytest.mark.parametrize("name", ct.pl.__all__)
def test_signature_and_docs(name):
    func = getattr(ct.pl, name)
    params = inspect.signature(func).parameters
    for arg in ("show", "save", "ax"):
        assert arg in params and params[arg].kind is inspect.Parameter.KEYWORD_ONLY, arg
        assert params[arg].default is None
    doc = func.__doc__
    # shared fragments filled in, no template placeholder left
    assert not re.search(r"\{\{?\w+\}", doc), doc
    assert "Show the figure and return ``None``" in doc and "Also write the figure to this path" in doc
    assert "The :class:`~matplotlib.figure.Figure` when not shown, else ``None``." in doc


@pytest.mark.parametrize("name", ct.pl.__all__)
def test_show_false_returns_the_only_open_figure(calls, name):
    fig = calls[name](show=False)
    assert isinstance(fig, Figure)
    assert plt.get_fignums() == [fig.number]  # no stray figure (e.g. from scanpy)


@pytest.mark.parametrize("name", ct.pl.__all__)
def test_show_true_returns_none_and_closes(calls, name):
    assert calls[name](show=True) is None
    assert plt.get_fignums() == []  # the Agg backend cannot show: the figure is closed, not leaked


@pytest.mark.parametrize("name", ct.pl.__all__)
def test_save_writes_the_file(calls, name, tmp_path, leftovers):
    png = tmp_path / f"{name}.png"
    assert calls[name](save=png, show=True) is None
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plt.get_fignums() == []
    pdf = tmp_path / f"{name}.pdf"
    fig = calls[name](save=str(pdf), show=False)
    assert isinstance(fig, Figure) and pdf.read_bytes()[:5] == b"%PDF-"
    assert leftovers(tmp_path) == []


def test_save_into_a_missing_folder_is_a_clear_error(calls, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist; create it first"):
        calls["confusion_matrix"](save=tmp_path / "nope" / "cm.png", show=False)


def test_default_show_follows_interactive_mode(calls):
    fig = calls["confusion_matrix"]()  # matplotlib is not interactive here: returned, not shown
    assert isinstance(fig, Figure)
    plt.ion()
    try:
        assert calls["confusion_matrix"]() is None
    finally:
        plt.ioff()
    assert plt.get_fignums() == [fig.number]
