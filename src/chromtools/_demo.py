"""The end-to-end demo behind ``chromtools demo`` / ``make demo``: every capability on simulated data."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import matplotlib

from chromtools import datasets, metrics, models, pl, tl
from chromtools._utils import PathLike, log_time

logger = logging.getLogger(__name__)


def _demo_mapping(scatac, out: Path, *, fast: bool, random_state: int) -> dict[str, str]:
    """Reference mapping on the simulated scATAC set: its last batch holds a cell type the reference lacks."""
    import matplotlib.pyplot as plt

    from . import metrics, tl

    ref = scatac[scatac.obs["batch"] != "batch_2"].copy()
    query = scatac[scatac.obs["batch"] == "batch_2"].copy()
    tl.train_reference(
        ref,
        "batch",
        "cell_type",
        model_dir=out / "mapping_reference",
        max_epochs=15 if fast else None,
        random_state=random_state,
        accelerator="cpu",
    )
    tl.map_query(query, str(out / "mapping_reference"), random_state=random_state, accelerator="cpu")
    tl.transfer_labels(query, ref, "cell_type")
    paths = {"mapping_reference": str(out / "mapping_reference" / "model.pt")}
    path = out / "mapping_query.h5ad"
    query.write_h5ad(path)
    paths["mapping_query"] = str(path)
    report = metrics.classification_report(query.obs["cell_type"], query.obs["cell_type_pred"])
    path = out / "mapping_report.csv"
    report.to_csv(path)
    paths["mapping_report"] = str(path)
    fig = pl.mapping_umap(query, ref, show=False)
    assert fig is not None  # show=False returns the figure
    path = out / "mapping_umap.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    paths["mapping_umap"] = str(path)
    fig = pl.confusion_matrix(query, "cell_type", "cell_type_pred", show=False)
    assert fig is not None  # show=False returns the figure
    path = out / "mapping_confusion.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    paths["mapping_confusion"] = str(path)
    return paths


def run_demo(out_dir: PathLike, *, fast: bool = False, random_state: int = 0) -> dict[str, str]:
    """Run every chromtools capability on data simulated by :mod:`chromtools.datasets`.

    Parameters
    ----------
    out_dir
        Folder for all outputs (bigWig, narrowPeak, h5ad, PNG and a ``manifest.json``).
    fast
        Smaller data and shorter training, for smoke tests.
    random_state
        Seed of every simulation and model.

    Returns
    -------
    Output name → path, also written to ``manifest.json``.
    """
    matplotlib.use("Agg")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    outputs: dict[str, str] = {}

    with log_time("Simulating a noisy/clean ATAC track pair", logger):
        # 4 Mb to train on and 2 Mb to validate: enough windows for the denoiser to learn
        sizes = {"chr1": 1_000_000, "chr2": 500_000} if fast else {"chr1": 4_000_000, "chr2": 2_000_000}
        sim = datasets.simulate_tracks(out / "tracks", chrom_sizes=sizes, random_state=random_state)
    outputs.update(noisy_track=str(sim.noisy), clean_track=str(sim.clean), clean_peaks=str(sim.narrowpeak))

    with log_time("Simulating scATAC peak counts (3 batches, one query-only cell type)", logger):
        scatac = datasets.simulate_scatac(
            1_000 if fast else 3_000, 2_000 if fast else 5_000, absent_cell_type="type_5", random_state=random_state
        )
        path = out / "scatac_simulated.h5ad"
        scatac.write_h5ad(path)
    outputs["scatac"] = str(path)

    # ---- reference mapping (ct.tl.train_reference / map_query / transfer_labels) -----------------
    with log_time("Reference mapping: train on batch_0/1, map batch_2 by surgery, transfer labels", logger):
        outputs.update(_demo_mapping(scatac, out, fast=fast, random_state=random_state))
    # ---------------------------------------------------------------------------------------------

    with log_time("Simulating time-course gene activity with planted modules", logger):
        tc = datasets.simulate_timecourse(300 if fast else 1_000, random_state=random_state)
        path = out / "timecourse_simulated.h5ad"
        tc.write_h5ad(path)
    outputs["timecourse"] = str(path)

    # --- track denoising and peak calling --------------------------------------------------------
    # three disjoint regions: train on most of chr1, choose (epoch, threshold, calibration) on its end, report on chr2
    choose = "chr1:750000-1000000" if fast else "chr1:3000000-4000000"
    with log_time(f"Training a track denoiser (train chr1, choose on {choose}, report on chr2)", logger):
        setup = models.TrackDenoiser.setup_tracks(
            sim.noisy, sim.clean, sim.peaks, val_chroms=[choose], holdout_chroms=["chr2"], window=50_000
        )
        arch: dict[str, Any] = {"channels": 16, "dilations": (1, 2, 4, 8, 16, 32, 64)} if fast else {}
        denoiser = models.TrackDenoiser(setup, **arch)
        denoiser.train(max_epochs=2 if fast else 12, progress=False, random_state=random_state)
        denoiser.save(out / "denoiser_model", overwrite=True)
    outputs["denoiser_model"] = str(out / "denoiser_model")
    with log_time("Denoising the noisy track genome-wide", logger):
        result = tl.denoise(sim.noisy, denoiser, out / "denoised" / "sim", progress=False)
    outputs.update(
        denoised_track=str(result.track), peak_probability=str(result.peakprob), denoised_peaks=str(result.peaks)
    )
    scores = {  # the noisy track times the depth ratio: the baseline in clean-track units
        "noisy": metrics.evaluate_denoising(
            sim.clean, sim.peaks, track=sim.noisy, chroms=["chr2"], scale_track=denoiser.spec_["depth_ratio"]
        ),
        "denoised": metrics.evaluate_denoising(
            sim.clean, sim.peaks, track=result.track, peakprob=result.peakprob, peaks=result.peaks, chroms=["chr2"]
        ),
    }
    path = out / "denoise_metrics.json"
    path.write_text(json.dumps({k: {m: float(v) for m, v in d.items()} for k, d in scores.items()}, indent=2))
    outputs["denoise_metrics"] = str(path)

    peak = sim.planted.loc[sim.planted["labelled"] & (sim.planted["chrom"] == "chr2")].iloc[10]
    region = (str(peak["chrom"]), max(int(peak["centre"]) - 25_000, 0), int(peak["centre"]) + 25_000)
    fig = pl.tracks(
        {"noisy": sim.noisy, "denoised": result.track, "clean": sim.clean, "peak probability": result.peakprob},
        region,
        peaks={"clean peaks": sim.peaks, "denoised calls": result.peaks},
        show=False,
    )
    assert fig is not None  # show=False returns the figure
    path = out / "tracks.png"
    fig.savefig(path, dpi=120)
    outputs["tracks_figure"] = str(path)

    # --- temporal gene modules (ct.tl.vrnn_cluster) ------------------------------------------
    with log_time("Clustering genes into temporal modules with the VRNN", logger):
        tl.vrnn_cluster(
            tc, "time", 5, layer="counts", max_epochs=40 if fast else 150, random_state=random_state, progress=False
        )
        path = out / "timecourse_modules.h5ad"
        tc.write_h5ad(path)
        outputs["timecourse_modules"] = str(path)
        path = out / "timecourse_modules.csv"
        tl.vrnn_export(tc, path)
        outputs["timecourse_modules_table"] = str(path)
        fig = pl.vrnn_trajectories(tc, show=False)
        assert fig is not None  # show=False returns the figure
        path = out / "timecourse_modules.png"
        fig.savefig(path, dpi=120)
        outputs["timecourse_modules_figure"] = str(path)
    # ------------------------------------------------------------------------------------------

    (out / "manifest.json").write_text(json.dumps(outputs, indent=2))
    return outputs
