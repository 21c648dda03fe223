"""The end-to-end demo behind ``chromtools demo`` / ``make demo``: every capability on simulated data."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import matplotlib

from . import datasets, pl, tl
from ._utils import PathLike, log_time

logger = logging.getLogger(__name__)


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
        sizes = {"chr1": 1_000_000, "chr2": 500_000} if fast else None
        sim = datasets.simulate_tracks(out / "tracks", chrom_sizes=sizes, random_state=random_state)
    outputs.update(noisy_track=str(sim.noisy), clean_track=str(sim.clean), clean_peaks=str(sim.narrowpeak))

    with log_time("Simulating scATAC peak counts (3 batches, one query-only cell type)", logger):
        scatac = datasets.simulate_scatac(
            1_000 if fast else 3_000, 2_000 if fast else 5_000, absent_cell_type="type_5", random_state=random_state
        )
        path = out / "scatac_simulated.h5ad"
        scatac.write_h5ad(path)
    outputs["scatac"] = str(path)

    with log_time("Simulating time-course gene activity with planted modules", logger):
        tc = datasets.simulate_timecourse(300 if fast else 1_000, random_state=random_state)
        path = out / "timecourse_simulated.h5ad"
        tc.write_h5ad(path)
    outputs["timecourse"] = str(path)

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
        path = out / "timecourse_modules.png"
        fig.savefig(path, dpi=120)
        outputs["timecourse_modules_figure"] = str(path)
    # ------------------------------------------------------------------------------------------

    peak = sim.planted.loc[sim.planted["labelled"]].iloc[len(sim.planted) // 4]
    region = (str(peak["chrom"]), max(int(peak["centre"]) - 25_000, 0), int(peak["centre"]) + 25_000)
    fig = pl.tracks({"noisy": sim.noisy, "clean": sim.clean}, region, peaks={"clean peaks": sim.peaks}, show=False)
    path = out / "tracks.png"
    fig.savefig(path, dpi=120)
    outputs["tracks_figure"] = str(path)

    (out / "manifest.json").write_text(json.dumps(outputs, indent=2))
    return outputs
