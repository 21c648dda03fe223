"""Numbers that a refactoring must not move: small, seeded runs of every capability, compared across commits.

Run: ``python benchmarks/refactor_check.py --before <commit>`` (about 10 minutes on 2 cores). It checks
out ``<commit>`` into a temporary git worktree, runs this same script there and here (``--run``), and
writes both fingerprints and their comparison to ``benchmarks/results/refactor_check.json``.

Each fingerprint holds, on simulated data generated with fixed seeds:

* denoising: a 2-epoch ``TrackDenoiser`` trained on a 2.4-Mb simulation (train chr1, choose chr2), the
  genome-wide denoised track and peaks on chr3 — Pearson, MSE and peak AUPRC against the clean track,
  the number of peaks, and a checksum of the written track;
* temporal modules: ``vrnn_cluster`` (VRNN, 40 epochs) and ``method="kmeans"`` on a 300-gene simulation —
  ARI against the planted modules and a checksum of the cluster labels;
* reference mapping: a reference model (20 epochs) on a 3-batch simulation, a query batch mapped by
  surgery (5 epochs) and labels transferred — accuracy, macro-F1 and a checksum of the latent space.

The scripts' only use of the package is its public API, so the same file runs on both commits; where
the API was renamed between them the script tries the new name first.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, git_commit


def _digest(values) -> str:
    arr = np.ascontiguousarray(np.asarray(values))
    return hashlib.sha256(arr.tobytes()).hexdigest()[:16]


def run_denoise(work: Path) -> dict:
    import torch

    import chromtools as ct

    sizes = {"chr1": 1_200_000, "chr2": 600_000, "chr3": 600_000}
    sim = ct.datasets.simulate_tracks(work / "sim", chrom_sizes=sizes, random_state=0)
    data = ct.models.TrackDenoiser.setup_tracks(
        sim.noisy, sim.clean, sim.peaks, train_chroms=["chr1"], val_chroms=["chr2"], holdout_chroms=["chr3"]
    )
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = ct.models.TrackDenoiser(data)
    model.train(max_epochs=2, progress=False)
    res = ct.tl.denoise(sim.noisy, model, work / "out" / "s", chroms=["chr3"], progress=False)
    clean = ct.io.read_bigwig(sim.clean, "chr3")
    track = ct.io.read_bigwig(res.track, "chr3")
    prob = ct.io.read_bigwig(res.peakprob, "chr3")
    truth = np.zeros(sizes["chr3"], bool)
    peaks = ct.io.read_peaks(sim.peaks)
    for s, e in peaks.loc[peaks["chrom"] == "chr3", ["start", "end"]].to_numpy():
        truth[s:e] = True
    from sklearn.metrics import average_precision_score

    return {
        "pearson": float(np.corrcoef(track, clean)[0, 1]),
        "mse": float(np.mean((track - clean) ** 2)),
        "auprc": float(average_precision_score(truth, prob)),
        "n_peaks": len(res.peak_table),
        "track_sha256": _digest(track),
    }


def _accepts(obj, name: str) -> bool:
    import inspect

    try:
        return name in inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return False


def run_vrnn() -> dict:
    from sklearn.metrics import adjusted_rand_score

    import chromtools as ct

    out = {}
    for method, kwargs in (("vrnn", {"max_epochs": 40}), ("kmeans", {})):
        adata = ct.datasets.simulate_timecourse(300, cells_per_time=40, random_state=0)
        ct.tl.vrnn_cluster(adata, "time", 5, method=method, n_top_genes=None, random_state=0, **kwargs)
        labels = adata.var["vrnn_cluster"].astype(str).to_numpy()
        keep = labels != "nan"
        out[method] = {
            "ari": float(adjusted_rand_score(adata.var["module"].to_numpy()[keep], labels[keep])),
            "labels_sha256": hashlib.sha256("\n".join(labels).encode()).hexdigest()[:16],
        }
    return out


def run_mapping(work: Path) -> dict:
    from sklearn.metrics import accuracy_score, f1_score

    import chromtools as ct

    adata = ct.datasets.simulate_scatac(1_500, 800, n_cell_types=4, n_batches=3, random_state=1)
    ref = adata[adata.obs["batch"] != "batch_2"].copy()
    query = adata[adata.obs["batch"] == "batch_2"].copy()
    truth = query.obs["cell_type"].astype(str).to_numpy()
    kwargs = {"max_epochs": 20, "random_state": 0}
    if _accepts(ct.tl.train_reference, "model_dir"):
        kwargs["model_dir"] = work / "reference"
    model = ct.tl.train_reference(ref, "batch", "cell_type", **kwargs)
    reference = model if model is not None else work / "reference"
    ct.tl.map_query(query, reference, max_epochs=5, random_state=0)
    ct.tl.transfer_labels(query, ref, "cell_type")
    pred = query.obs["cell_type_pred" if "cell_type_pred" in query.obs else "cell_type_transferred"].astype(str)
    return {
        "accuracy": float(accuracy_score(truth, pred)),
        "macro_f1": float(f1_score(truth, pred, average="macro")),
        "latent_sha256": _digest(np.round(query.obsm["X_reference"], 4)),
    }


def fingerprint(out: Path) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    commit = git_commit(root=Path.cwd())  # the checkout being fingerprinted: the script runs with its cwd there
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        import chromtools

        result = {"git_commit": commit, "chromtools_from": str(Path(chromtools.__file__).parents[1])}
        for name, fn in (
            ("denoise", lambda: run_denoise(work)),
            ("vrnn", run_vrnn),
            ("mapping", lambda: run_mapping(work)),
        ):
            try:
                result[name] = fn()
            except Exception as err:  # noqa: BLE001 - a capability that fails on one commit is recorded, not fatal
                result[name] = {"error": f"{type(err).__name__}: {err}"}
    out.write_text(json.dumps(result, indent=2))


def _flatten(d: dict, prefix: str = "") -> dict:
    flat = {}
    for k, v in d.items():
        if isinstance(v, dict):
            flat.update(_flatten(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def compare(before: dict, after: dict) -> dict:
    a, b = _flatten(before), _flatten(after)
    keys = sorted((set(a) | set(b)) - {"git_commit", "chromtools_from"})
    rows = {k: {"before": a.get(k), "after": b.get(k), "same": a.get(k) == b.get(k)} for k in keys}
    return {"all_same": all(r["same"] for r in rows.values()), "values": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", help="commit to compare against (checked out in a temporary worktree)")
    parser.add_argument("--run", type=Path, help="only write this checkout's fingerprint to the given file")
    args = parser.parse_args()
    if args.run:
        fingerprint(args.run)
        return
    if not args.before:
        parser.error("give --before <commit> (or --run FILE)")
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "before"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(tree), args.before], cwd=ROOT, check=True, capture_output=True
        )
        try:
            prints = {}
            for name, checkout in (("before", tree), ("after", ROOT)):
                prints[name] = Path(tmp) / f"{name}.json"
                subprocess.run(
                    [sys.executable, str(Path(__file__).resolve()), "--run", str(prints[name])],
                    cwd=checkout,
                    env={**os.environ, "PYTHONPATH": str(checkout / "src")},
                    check=True,
                )
            before, after = (json.loads(prints[k].read_text()) for k in ("before", "after"))
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False, capture_output=True
            )
    result = {
        "command": f"python benchmarks/refactor_check.py --before {args.before}",
        "before_commit": before["git_commit"],
        "git_commit": after["git_commit"],
        "before": before,
        "after": after,
        "comparison": compare(before, after),
    }
    out = ROOT / "benchmarks" / "results" / "refactor_check.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["comparison"], indent=2))


if __name__ == "__main__":
    main()
