"""Short GPU check of every model: train briefly, then run genome-wide / whole-data inference; time each step.

Run through ``benchmarks/gpu_check.sh`` on a machine with a GPU (writes ``benchmarks/results/gpu.json``);
``python benchmarks/gpu_check.py --accelerator cpu --small`` runs the same steps on a CPU as a dry run.
CI never runs it (CI has no GPU).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import git_commit, machine, write_results

import chromtools as ct


def _timed(results: dict, name: str, fn):
    t0 = time.perf_counter()
    out = fn()
    results[name] = round(time.perf_counter() - t0, 3)
    print(f"{name}: {results[name]:.1f} s", flush=True)
    return out


def check_denoiser(work: Path, accelerator: str, small: bool, results: dict) -> None:
    mb = 1 if small else 10
    sizes = {"chr1": 6 * mb * 1_000_000, "chr2": 3 * mb * 1_000_000, "chr3": 1 * mb * 1_000_000}
    sim = ct.datasets.simulate_tracks(work / "tracks", chrom_sizes=sizes, random_state=0)
    data = ct.models.TrackDenoiser.setup_tracks(sim.noisy, sim.clean, sim.peaks, val_chroms=["chr3"])
    model = ct.models.TrackDenoiser(data)
    _timed(
        results, "denoiser_train_2_epochs_s", lambda: model.train(max_epochs=2, accelerator=accelerator, progress=False)
    )
    res = _timed(
        results,
        "denoiser_genome_wide_s",
        lambda: ct.tl.denoise(sim.noisy, model, work / "out" / "s", accelerator=accelerator, progress=False),
    )
    results["denoiser_genome_bp"] = res.n_bases
    results["denoiser_bp_per_s"] = res.bases_per_second


def check_vrnn(work: Path, accelerator: str, small: bool, results: dict) -> None:
    adata = ct.datasets.simulate_timecourse(n_genes=300 if small else 2000, random_state=0)
    _timed(
        results,
        "vrnn_cluster_s",
        lambda: ct.tl.vrnn_cluster(
            adata, "time", 5, layer="counts", accelerator=accelerator, max_epochs=20 if small else 150, progress=False
        ),
    )
    results["vrnn_genes"] = int(adata.n_vars)


def check_mapping(work: Path, accelerator: str, small: bool, results: dict) -> None:
    adata = ct.datasets.simulate_scatac(2_000 if small else 20_000, 2_000 if small else 20_000, random_state=0)
    batches = adata.obs["batch"].astype(str)
    ref, query = adata[batches != batches.iloc[-1]].copy(), adata[batches == batches.iloc[-1]].copy()
    _timed(
        results,
        "mapping_train_reference_s",
        lambda: ct.tl.train_reference(
            ref, "batch", "cell_type", model_dir=work / "ref", accelerator=accelerator, max_epochs=10
        ),
    )
    _timed(results, "mapping_map_query_s", lambda: ct.tl.map_query(query, work / "ref", accelerator=accelerator))
    results["mapping_cells"] = [int(ref.n_obs), int(query.n_obs)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accelerator", default="gpu")
    parser.add_argument("--small", action="store_true", help="a dry run's sizes")
    args = parser.parse_args()
    import torch

    results: dict = {"machine": machine(), "git_commit": git_commit(), "accelerator": args.accelerator}
    if args.accelerator == "gpu":
        results["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        if not torch.cuda.is_available():
            sys.exit("no CUDA device visible to torch; run on a GPU machine or pass --accelerator cpu")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, check in (("denoiser", check_denoiser), ("vrnn", check_vrnn), ("mapping", check_mapping)):
            try:
                check(work, args.accelerator, args.small, results)
                results[f"{name}_ok"] = True
            except Exception as err:  # noqa: BLE001 - a failing model is recorded, the others still run
                results[f"{name}_ok"] = False
                results[f"{name}_error"] = f"{type(err).__name__}: {err}"
                print(f"{name} failed: {err}", flush=True)
    write_results("gpu" if args.accelerator == "gpu" else f"gpu_dryrun_{args.accelerator}", results)


if __name__ == "__main__":
    main()
