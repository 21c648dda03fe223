"""Temporal gene modules: the VRNN against profile clustering, with ablations, over several seeds.

Run: ``python benchmarks/vrnn.py`` (writes ``benchmarks/results/vrnn.json``; ~30 minutes on 2 shared cores).
``VRNN_BENCH_SMOKE=1`` runs a tiny version to check the script (results not written).
Needs the real data folder (``../shared/data`` or CHROMTOOLS_DATA); k-Shape needs tslearn (``bench`` extra)
and is recorded as not run when tslearn cannot be imported.

Every method runs through ``ct.tl.vrnn_cluster(method=...)`` on the same standardised profiles
(per-time means of the counts, standardised per gene and shrunk by their standard error; at time
points where a gene was not measured, the profile methods get the value linearly interpolated in
real time between the gene's measured points, the VRNN masks the point out of its likelihood).

* ``vrnn``: defaults; ``vrnn_no_dt``: ``use_dt=False`` (no decay with the gap: every gap one step);
  ``vrnn_no_uncertainty``: ``use_noise=False`` (no standard errors in the likelihood).
* ``kmeans``: k-means (20 restarts) on the standardised shrunk profiles (the VRNN input);
  ``kmeans_unshrunk``: on plain z-scores; ``fcm``: Mfuzz-style fuzzy c-means (fuzzifier from
  Schwämmle & Jensen 2010); ``kshape``: tslearn k-Shape.

Data, with k given (nothing is tuned on the reported data):
* simulations (``ct.datasets.simulate_timecourse_variant``, 1,000 genes, 5 planted modules):
  ``standard``, ``uneven_cells``, ``irregular`` (the target set), ``shifted``, ``sparse``; report seeds
  0-4 (seed s: simulation random_state s and training random_state s). The model's defaults (decay
  initialisation, epochs, latent size) were chosen on simulation random_state 100, which is not reported.
  The VRNN ablations run on ``standard``, ``uneven_cells`` and ``irregular`` (compute budget).
  Run-to-run ARI on a simulation: VRNN trained with seeds 0, 1, 2 on the random_state-0 data.
  The clusterings run in two worker processes (one torch thread each); the speed check runs alone.
* yeast cell cycle (Cho et al. 1998; 384 genes, 17 time points, k=5, ARI against the phase classes).
* HSMM sci-ATAC (gene activity of chr18, 4 time points, top 300 dynamic genes) and THP-1 single-cell
  qPCR (45 genes, 8 time points): no labels, so run-to-run ARI between seeds and module timing; k is
  chosen in every run by ``vrnn_cluster``'s own silhouette criterion over 2-8 (``n_clusters=None``).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import functools
import itertools
import logging
import multiprocessing
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import git_commit, machine, peak_rss_mb, require_data, timer, write_results

import chromtools as ct

SMOKE = os.environ.get("VRNN_BENCH_SMOKE") == "1"
# VRNN_BENCH_METHODS=kshape,kmeans runs only these methods (no VRNN stability/speed rows, no targets) and
# writes results/vrnn_<methods>.json: a supplementary run, e.g. for a baseline whose library was missing
ONLY = [m for m in os.environ.get("VRNN_BENCH_METHODS", "").split(",") if m]
THREADS = 1
SEEDS = (0, 1) if SMOKE else (0, 1, 2, 3, 4)
STABILITY_SEEDS = (0, 1) if SMOKE else (0, 1, 2)
TUNING_SEED = 100
SIM_GENES = 120 if SMOKE else 1_000
SPEED_GENES = 200 if SMOKE else 2_000
EPOCHS = 10 if SMOKE else None  # None: the default of ct.tl.vrnn_cluster
VARIANTS = ("standard", "uneven_cells", "irregular", "shifted", "sparse")
ABLATION_VARIANTS = ("standard", "uneven_cells", "irregular")  # the VRNN ablations (compute budget)
WORKERS = 2  # worker processes, one torch thread each
K_RANGE = range(2, 9)  # unlabelled sets: k chosen in every run by the built-in silhouette criterion
METHODS = {
    "vrnn": {"method": "vrnn"},
    "vrnn_no_dt": {"method": "vrnn", "model_kwargs": {"use_dt": False}},
    "vrnn_no_uncertainty": {"method": "vrnn", "model_kwargs": {"use_noise": False}},
    "kmeans": {"method": "kmeans"},
    "kmeans_unshrunk": {"method": "kmeans", "shrink": False},
    "fcm": {"method": "fcm"},
    "kshape": {"method": "kshape"},
}
PROFILE_BASELINES = ("kmeans", "kmeans_unshrunk", "fcm", "kshape")

warnings.filterwarnings("ignore")
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)


def have_tslearn() -> bool:
    try:
        import tslearn  # noqa: F401
    except ImportError:
        return False
    return True


def rnd(x: float) -> float:
    return round(float(x), 4)


def summary_stats(values: list[float]) -> dict:
    v = np.asarray(values, float)
    return {"values": [rnd(x) for x in v], "mean": rnd(v.mean()), "sd": rnd(v.std(ddof=1)) if v.size > 1 else 0.0}


def run(adata, method: str, k: int, seed: int, layer, **extra) -> dict:
    """One clustering through the public API: labels (None where not modelled), seconds, module timing."""
    a = adata.copy()
    kw = dict(METHODS[method])
    if EPOCHS is not None:
        kw["max_epochs"] = EPOCHS
    kw.update(extra)
    with timer() as t:
        ct.tl.vrnn_cluster(a, "time", k, layer=layer, random_state=seed, accelerator="cpu", devices=1, **kw)
    labels = a.var["vrnn_cluster"].astype(object).to_numpy()
    return {
        "labels": labels,
        "seconds": t["seconds"],
        "timing": a.uns["vrnn"]["module_timing"],
        "membership": a.var["vrnn_membership"].to_numpy(),
    }


def ari_on_selected(truth, labels) -> float:
    sel = np.asarray([v is not None and v == v for v in labels])
    return float(adjusted_rand_score(np.asarray(truth)[sel], labels[sel].astype(str)))


def pairwise_ari(label_sets: list[np.ndarray]) -> dict:
    pairs = []
    for a, b in itertools.combinations(label_sets, 2):
        sel = np.asarray([x is not None and x == x for x in a]) & np.asarray([x is not None and x == x for x in b])
        pairs.append(adjusted_rand_score(a[sel].astype(str), b[sel].astype(str)))
    return {"pairs": [rnd(p) for p in pairs], "mean": rnd(np.mean(pairs)), "min": rnd(np.min(pairs))}


def methods_to_run() -> list[str]:
    return [m for m in METHODS if (m != "kshape" or have_tslearn()) and (not ONLY or m in ONLY)]


@functools.cache
def dataset(name: str, seed: int = 0):
    """(AnnData, layer, k, extra arguments, truth or None) of a data set; cached per worker process."""
    data = require_data()
    if name in VARIANTS:
        sim = ct.datasets.simulate_timecourse_variant(name, SIM_GENES, random_state=seed)
        return sim, "counts", 5, {}, sim.var["module"].astype(str).to_numpy()
    if name == "yeast":
        yeast = ct.datasets.cho1998_yeast(data)
        return yeast, None, 5, {}, yeast.var["phase_class"].astype(str).to_numpy()
    if name == "hsmm":
        atac = ct.datasets.hsmm_sciatac(data)
        activity = ct.pp.gene_activity(atac, ct.datasets.hsmm_gene_annotation(data))
        return activity, "counts", None, {"n_top_genes": 300, "k_range": K_RANGE}, None
    if name == "thp1":
        return ct.datasets.kouno2013_thp1(data), None, None, {"k_range": K_RANGE}, None
    raise ValueError(name)


def task(args: tuple[str, int, str, int]) -> dict:
    """One clustering: data set ``name`` (simulation seed ``data_seed``), ``method``, training seed ``seed``."""
    name, data_seed, method, seed = args
    torch.set_num_threads(THREADS)
    adata, layer, k, extra, truth = dataset(name, data_seed)
    r = run(adata, method, k, seed, layer, **extra)
    out = {
        "labels": r["labels"],
        "seconds": r["seconds"],
        "timing": r["timing"],
        "membership": float(np.nanmean(r["membership"])),
    }
    if truth is not None:
        out["ari"] = ari_on_selected(truth, r["labels"])
    return out


def all_tasks() -> list[tuple[str, int, str, int]]:
    tasks = []
    for variant in VARIANTS:
        for m in methods_to_run():
            if m.startswith("vrnn_") and variant not in ABLATION_VARIANTS:
                continue
            tasks += [(variant, seed, m, seed) for seed in SEEDS]
        if "vrnn" in methods_to_run():
            tasks += [(variant, 0, "vrnn", s) for s in STABILITY_SEEDS if s != 0]  # seed 0 on data 0 is above
    for name in ("yeast", "hsmm", "thp1"):
        tasks += [(name, 0, m, seed) for m in methods_to_run() for seed in SEEDS]
    return tasks


def bench_simulation(variant: str, done: dict) -> dict:
    out = {"methods": {}}
    for m in methods_to_run():
        if (variant, 0, m, 0) not in done:
            continue
        runs = [done[(variant, seed, m, seed)] for seed in SEEDS]
        out["methods"][m] = {
            "ari": summary_stats([r["ari"] for r in runs]),
            "seconds_mean": round(float(np.mean([r["seconds"] for r in runs])), 1),
            "mean_top_membership": rnd(np.mean([r["membership"] for r in runs])),
        }
    if "vrnn" in methods_to_run():
        out["run_to_run_ari_vrnn"] = pairwise_ari([done[(variant, 0, "vrnn", s)]["labels"] for s in STABILITY_SEEDS])
    sim0 = ct.datasets.simulate_timecourse_variant(variant, 20, random_state=0).uns["simulation"]
    out["design"] = {k: sim0[k] for k in ("time_points", "cells_per_time", "mean_count", "time_shift", "missing")}
    print(
        f"== simulation {variant}: "
        + "  ".join(f"{m} {v['ari']['mean']:.3f}±{v['ari']['sd']:.3f}" for m, v in out["methods"].items()),
        flush=True,
    )
    return out


def match_to(reference: np.ndarray, labels: np.ndarray) -> dict:
    """Map each module of ``labels`` to the reference module it overlaps most (Hungarian)."""
    ref, lab = np.unique(reference), np.unique(labels)
    overlap = np.array([[np.sum((labels == a) & (reference == b)) for b in ref] for a in lab])
    rows, cols = linear_sum_assignment(-overlap)
    return {lab[r]: ref[c] for r, c in zip(rows, cols, strict=True)}


def bench_unlabelled(name: str, done: dict) -> dict:
    """Run-to-run ARI between seeds and module timing (onset with its bootstrap interval) of every method."""
    out = {}
    for m in methods_to_run():
        runs = [done[(name, 0, m, seed)] for seed in SEEDS]
        labels = [r["labels"] for r in runs]
        ref = labels[0]
        sel = np.asarray([x is not None and x == x for x in ref])
        ref_table = runs[0]["timing"].set_index("module")
        onsets = {mod: [] for mod in ref_table.index}
        for r in runs:
            mapping = match_to(ref[sel].astype(str), r["labels"][sel].astype(str))
            table = r["timing"].set_index("module")
            for mod in table.index:
                if mod in mapping:
                    onsets[mapping[mod]].append(float(table.loc[mod, "onset"]))
        timing = []
        for mod, row in ref_table.iterrows():
            values = np.asarray(onsets[mod], float)
            timing.append(
                {
                    "module": mod,
                    "n_genes": int(row["n_genes"]),
                    "response": row.get("response"),
                    "onset_seed0": rnd(row["onset"]),
                    "onset_interval_seed0": [rnd(row["onset_low"]), rnd(row["onset_high"])],
                    "onset_sd_across_seeds": rnd(np.nanstd(values)) if np.isfinite(values).any() else None,
                }
            )
        out[m] = {
            "k_chosen": [int(np.unique([x for x in lab if x is not None and x == x]).size) for lab in labels],
            "run_to_run_ari": pairwise_ari(labels),
            "seconds_mean": round(float(np.mean([r["seconds"] for r in runs])), 1),
            "mean_top_membership": rnd(runs[0]["membership"]),
            "module_timing": timing,
        }
        print(f"== {name} {m}: run-to-run ARI {out[m]['run_to_run_ari']['mean']}", flush=True)
    return out


def bench_yeast(done: dict) -> dict:
    yeast, _, _, _, truth = dataset("yeast")
    out = {"genes": int(yeast.n_vars), "time_points": int(yeast.n_obs), "methods": {}}
    for m in methods_to_run():
        runs = [done[("yeast", 0, m, seed)] for seed in SEEDS]
        out["methods"][m] = {
            "ari": summary_stats([r["ari"] for r in runs]),
            "run_to_run_ari": pairwise_ari([r["labels"] for r in runs]),
            "seconds_mean": round(float(np.mean([r["seconds"] for r in runs])), 1),
        }
        print(f"== yeast {m}: ARI {out['methods'][m]['ari']['mean']} ± {out['methods'][m]['ari']['sd']}", flush=True)
    out["supervised_reference"] = supervised_reference(yeast, truth)
    return out


def supervised_reference(yeast, truth) -> dict:
    """How well the phases can be told apart from the standardised profiles at all (5-fold CV classifiers)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    s = ct.pp.timecourse_summary(yeast, "time", n_top_genes=None)
    y = truth[yeast.var_names.get_indexer(s.obs_names)]
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    pred = cross_val_predict(LogisticRegression(max_iter=5000), s.layers["zscore"], y, cv=cv)
    return {"logistic_regression_cv_ari": rnd(adjusted_rand_score(y, pred))}


def bench_speed() -> dict:
    """Time of ct.tl.vrnn_cluster on 2,000 genes (7 time points), 1 and 2 torch threads, on the shared machine."""
    sim = ct.datasets.simulate_timecourse_variant("standard", SPEED_GENES, random_state=0)
    out = {"genes": SPEED_GENES, "time_points": 7, "seconds_by_threads": {}}
    labels = []
    for threads in (1, 2, 1):
        torch.set_num_threads(threads)
        r = run(sim, "vrnn", 5, 0, "counts", train_kwargs={"cpu_threads": threads})
        out["seconds_by_threads"].setdefault(str(threads), []).append(round(r["seconds"], 1))
        if threads == 1:
            labels.append(r["labels"])
        print(f"   vrnn_cluster on {SPEED_GENES} genes, {threads} thread(s): {r['seconds']:.1f} s", flush=True)
    torch.set_num_threads(THREADS)
    out["best_seconds"] = min(min(v) for v in out["seconds_by_threads"].values())
    out["identical_clusters_same_seed"] = bool(np.array_equal(labels[0], labels[1]))
    return out


def targets(results: dict) -> list[dict]:
    irr = results["simulations"]["irregular"]["methods"]
    best_name = max((m for m in PROFILE_BASELINES if m in irr), key=lambda m: irr[m]["ari"]["mean"])
    vrnn_irr = irr["vrnn"]["ari"]["mean"]
    margin = rnd(vrnn_irr - irr[best_name]["ari"]["mean"])
    yeast = results["yeast"]["methods"]["vrnn"]["ari"]["mean"]
    r2r = {f"simulation {v}": results["simulations"][v]["run_to_run_ari_vrnn"]["mean"] for v in VARIANTS}
    r2r["yeast"] = results["yeast"]["methods"]["vrnn"]["run_to_run_ari"]["mean"]
    r2r["hsmm"] = results["hsmm"]["vrnn"]["run_to_run_ari"]["mean"]
    r2r["thp1"] = results["thp1"]["vrnn"]["run_to_run_ari"]["mean"]
    speed = results["speed"]["best_seconds"]
    return [
        {
            "name": "irregular simulation: VRNN ARI (mean over seeds)",
            "target": ">= 0.9",
            "value": vrnn_irr,
            "met": vrnn_irr >= 0.9,
        },
        {
            "name": f"irregular simulation: VRNN ARI minus best profile baseline ({best_name})",
            "target": ">= 0.05",
            "value": margin,
            "met": margin >= 0.05,
        },
        {"name": "yeast (k=5): VRNN ARI (mean over seeds)", "target": ">= 0.55", "value": yeast, "met": yeast >= 0.55},
        {
            "name": "run-to-run ARI of the VRNN on every set (lowest set mean)",
            "target": ">= 0.9",
            "value": dict(r2r),
            "met": min(r2r.values()) >= 0.9,
        },
        {
            "name": "vrnn_cluster on 2,000 genes on the 2-core machine (s; shared with other jobs)",
            "target": "<= 60",
            "value": speed,
            "met": speed <= 60,
        },
        {
            "name": "identical results for the same seed",
            "target": True,
            "value": results["speed"]["identical_clusters_same_seed"],
            "met": results["speed"]["identical_clusters_same_seed"],
        },
    ]


def main() -> None:
    torch.set_num_threads(THREADS)
    require_data()
    commit = git_commit()
    load_start = os.getloadavg()
    with timer() as total:
        tasks = all_tasks()
        # longest first (irregular simulations, then VRNN fits) so the two workers finish together
        tasks.sort(key=lambda t: (t[0] != "irregular", not t[2].startswith("vrnn"), t[0] not in VARIANTS))
        print(f"{len(tasks)} clusterings on {WORKERS} worker processes", flush=True)
        with multiprocessing.get_context("fork").Pool(WORKERS) as pool:
            done = dict(zip(tasks, pool.map(task, tasks, chunksize=1), strict=True))
        results = {"simulations": {v: bench_simulation(v, done) for v in VARIANTS}}
        results["yeast"] = bench_yeast(done)
        results["hsmm"] = bench_unlabelled("hsmm", done)
        results["thp1"] = bench_unlabelled("thp1", done)
        if not ONLY:
            results["speed"] = bench_speed()
    results["targets"] = targets(results) if not ONLY else []
    results.update(
        {
            "command": (f"VRNN_BENCH_METHODS={','.join(ONLY)} " if ONLY else "") + "python benchmarks/vrnn.py",
            "git_commit": commit,
            "machine": machine(),
            "settings": {
                "seeds": list(SEEDS),
                "stability_seeds_simulation": list(STABILITY_SEEDS),
                "tuning_seed_not_reported": TUNING_SEED,
                "simulation_genes": SIM_GENES,
                "ablation_variants": list(ABLATION_VARIANTS),
                "workers": WORKERS,
                "kshape": "tslearn KShape"
                if have_tslearn()
                else "not run: tslearn is not importable in this environment",
                "methods": {m: str(v) for m, v in METHODS.items()},
                "missing_points_for_profile_methods": "linear interpolation in real time between the gene's measured "
                "time points (constant beyond the first/last measured one), after standardising and shrinking",
                "vrnn": "ct.tl.vrnn_cluster defaults (n_latent=4, n_hidden=32, 150 epochs, batch 128, Adam 1e-2 "
                "cosine-decayed to 5e-4, KL warm-up over half the epochs, shrink=True, k-means on posterior means)",
                "timing_note": "seconds measured on a 2-core machine shared with three other jobs: not reportable as speed",
            },
            "total_seconds": round(total["seconds"], 1),
            "load_average_1_5_15min": {
                "start": [round(v, 2) for v in load_start],
                "end": [round(v, 2) for v in os.getloadavg()],
            },
            "peak_rss_mb": round(peak_rss_mb(), 1),
        }
    )
    if SMOKE:
        print("smoke run: results not written")
    else:
        write_results("vrnn" if not ONLY else "vrnn_" + "_".join(ONLY), results)
    for t in results["targets"]:
        print(f"{'MET ' if t['met'] else 'MISS'} {t['name']}: {t['value']} (target {t['target']})")


if __name__ == "__main__":
    main()
