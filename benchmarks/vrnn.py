"""Temporal gene modules: ct.tl.vrnn_cluster against z-score + k-means, k-Shape and a seed-style VRNN.

Run: ``python benchmarks/vrnn.py`` (writes ``benchmarks/results/vrnn.json``; about 10 minutes on 2 cores).
Needs the ``bench`` extra (tslearn) and the real data folder (``../shared/data`` or CHROMTOOLS_DATA).

Data: simulated planted modules (2,000 genes, 7 uneven time points 0-48 h, 100 cells each; per-time
means of the raw counts, whose truth the simulation plants) and the labelled yeast cell cycle
(Cho et al. 1998: 384 genes, 17 time points, 5 phase classes). Targets on a 2-core CPU: ARI >= 0.9 on
the simulation, >= 0.55 on yeast, 2,000 genes trained in <= 60 s, identical results for the same seed.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
# Idle OpenMP threads sleep instead of spinning: on a busy machine spinning makes 2 threads ~50x slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import itertools
import logging
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score
from sklearn.model_selection import train_test_split

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, peak_rss_mb, require_data, timer, write_results

import chromtools as ct
from chromtools.models._vrnn import seeded

THREADS = 1  # one torch thread: these small recurrent steps gain nothing from a second one
K = 5
SEEDS = (0, 1, 2)
SIM = {"n_genes": 2_000, "random_state": 0, "layer": "counts"}

warnings.filterwarnings("ignore")
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)


def ari(a, b) -> float:
    return round(float(adjusted_rand_score(a, b)), 4)


# --- baselines ---------------------------------------------------------------------------------
def zscore_kmeans(summary, labels) -> float:
    return ari(labels, KMeans(K, n_init=10, random_state=0).fit_predict(summary.layers["zscore"]))


def kshape(summary, labels) -> float:
    from tslearn.clustering import KShape
    from tslearn.preprocessing import TimeSeriesScalerMeanVariance

    series = TimeSeriesScalerMeanVariance().fit_transform(summary.layers["mean"][:, :, None])
    return ari(labels, KShape(n_clusters=K, random_state=0).fit_predict(series))


class SeedVRNN(torch.nn.Module):
    """The seed project's VRNN (XinyiZoe/VRNN_Gene_Clustering, src/models.py), re-implemented.

    LSTM recurrence on [x_t, z_t]; prior p(z_t | h_{t-1}); encoder q(z_t | x_t, h_{t-1}); decoder
    on [h_t, z_t] -- h_t has already read x_t, so the latent is not needed; unit-variance Gaussian
    likelihood; KL weight 1e-6; h 32, z 64, hidden 64.
    """

    def __init__(self, h_dim: int = 32, z_dim: int = 64, hidden: int = 64):
        super().__init__()
        mlp = lambda n_in: torch.nn.Sequential(
            torch.nn.Linear(n_in, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, hidden), torch.nn.ReLU()
        )
        self.enc, self.prior = mlp(h_dim + 1), mlp(h_dim)
        self.enc_m, self.enc_v = torch.nn.Linear(hidden, z_dim), torch.nn.Linear(hidden, z_dim)
        self.pri_m, self.pri_v = torch.nn.Linear(hidden, z_dim), torch.nn.Linear(hidden, z_dim)
        self.rnn = torch.nn.LSTMCell(1 + z_dim, h_dim)
        self.dec = torch.nn.Sequential(
            torch.nn.Linear(h_dim + z_dim, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1)
        )
        self.h_dim = h_dim

    def forward(self, x):
        n, T, _ = x.shape
        h = x.new_zeros(n, self.h_dim)
        c = x.new_zeros(n, self.h_dim)
        loss, zs, means = 0.0, [], []
        for t in range(T):
            e = self.enc(torch.cat([h, x[:, t]], -1))
            qm, qlv = self.enc_m(e), self.enc_v(e)
            p = self.prior(h)
            pm, plv = self.pri_m(p), self.pri_v(p)
            z = qm + torch.randn_like(qm) * torch.exp(0.5 * qlv)
            h, c = self.rnn(torch.cat([x[:, t], z], -1), (h, c))
            xm = self.dec(torch.cat([h, z], -1))
            nll = 0.5 * ((x[:, t] - xm) ** 2).sum(-1)
            kl = 0.5 * (plv - qlv + (qlv.exp() + (qm - pm) ** 2) / plv.exp() - 1).sum(-1)
            loss = loss + nll + 1e-6 * kl
            zs.append(z)
            means.append(qm)
        return loss.mean(), torch.stack(zs, 1), torch.stack(means, 1)


def supervised_reference(summary, labels) -> dict:
    """How well the labels can be told apart from the standardised curves at all: 5-fold cross-validated
    classifiers, and nearest true class centroid. A clustering is unlikely to agree with the labels more."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.svm import SVC

    z = summary.layers["zscore"]
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    centroids = np.stack([z[labels == c].mean(0) for c in np.unique(labels)])
    nearest = np.unique(labels)[((z[:, None, :] - centroids[None]) ** 2).sum(-1).argmin(1)]
    return {
        "logistic_regression_cv_ari": ari(
            labels, cross_val_predict(LogisticRegression(max_iter=5000), z, labels, cv=cv)
        ),
        "rbf_svm_cv_ari": ari(labels, cross_val_predict(SVC(C=1.0), z, labels, cv=cv)),
        "nearest_true_centroid_ari": ari(labels, nearest),
    }


def seed_vrnn(summary, labels, seed: int = 42, epochs: int = 2_000) -> dict:
    """The seed's recipe: unscaled per-time means, Adam 1e-4, 2,000 epochs, batch 400, 80/20 gene split,
    sampled z averaged over time, k-means (random_state 42). Seeded here (the seed project is not)."""
    x = torch.tensor(np.asarray(summary.layers["mean"]), dtype=torch.float32).unsqueeze(-1)
    with seeded(seed):
        model = SeedVRNN()
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        train_idx, _ = train_test_split(np.arange(x.shape[0]), test_size=0.2, random_state=42)
        with timer() as t:
            for _ in range(epochs):
                perm = torch.from_numpy(np.random.permutation(train_idx))
                for i in range(0, perm.numel(), 400):
                    loss, _, _ = model(x[perm[i : i + 400]])
                    opt.zero_grad()
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
                    opt.step()
        with torch.no_grad():
            _, z, qm = model(x)
    pred = KMeans(K, random_state=42, n_init=10).fit_predict(z.mean(1).numpy())
    # Diagnostic: the same trained network with posterior means (kept per time point) as features.
    pred_means = KMeans(K, random_state=42, n_init=10).fit_predict(qm.reshape(qm.shape[0], -1).numpy())
    return {
        "ari": ari(labels, pred),
        "ari_with_posterior_means": ari(labels, pred_means),
        "train_seconds": round(t["seconds"], 1),
        "epochs": epochs,
    }


# --- ours --------------------------------------------------------------------------------------
def ours(adata, labels, *, layer, seed=0, **kw) -> tuple[float, object]:
    a = adata.copy()
    with timer() as t:
        ct.tl.vrnn_cluster(a, "time", K, layer=layer, random_state=seed, accelerator="cpu", devices=1, **kw)
    sel = a.var["vrnn_selected"].to_numpy()
    return ari(labels[sel], a.var["vrnn_cluster"].to_numpy()[sel]), a, t["seconds"]


def bench_dataset(name, adata, labels, layer) -> dict:
    print(f"== {name}: {adata.n_obs} samples x {adata.n_vars} genes", flush=True)
    summary = ct.pp.timecourse_summary(adata, "time", layer=layer, n_top_genes=None)
    y = labels[adata.var_names.get_indexer(summary.obs_names)]
    shrunk = KMeans(K, n_init=10, random_state=0).fit_predict(summary.X)
    out = {
        "genes": int(summary.n_obs),
        "time_points": summary.var["time"].tolist(),
        "zscore_kmeans": zscore_kmeans(summary, y),
        "kshape": kshape(summary, y),
        "shrunk_zscore_kmeans": ari(y, shrunk),
        "supervised_reference": supervised_reference(summary, y),
    }
    print(f"   z-score+k-means {out['zscore_kmeans']}  k-Shape {out['kshape']}  shrunk {out['shrunk_zscore_kmeans']}")
    runs, features = [], []
    for seed in SEEDS:
        score, a, secs = ours(adata, labels, layer=layer, seed=seed)
        runs.append({"seed": seed, "ari": score, "seconds": round(secs, 1)})
        features.append(a.var["vrnn_cluster"].to_numpy())
        print(f"   vrnn_cluster seed {seed}: ARI {score} ({secs:.1f} s)", flush=True)
    out["vrnn_cluster"] = runs[0]["ari"]
    out["vrnn_cluster_runs"] = runs
    out["vrnn_cluster_mean_ari"] = round(float(np.mean([r["ari"] for r in runs])), 4)
    pairs = [
        ari(*[f[~_na(f)] for f in (features[i], features[j])]) for i, j in itertools.combinations(range(len(SEEDS)), 2)
    ]
    out["run_to_run_ari"] = {"pairs": pairs, "mean": round(float(np.mean(pairs)), 4), "min": min(pairs)}
    out["seed_vrnn"] = seed_vrnn(summary, y)
    print(f"   seed-style VRNN: ARI {out['seed_vrnn']['ari']} ({out['seed_vrnn']['train_seconds']} s)", flush=True)
    ablations = {}
    for label, kw in {
        "no_time_gap_input": {"model_kwargs": {"use_dt": False}},
        "no_uncertainty_weighting": {"model_kwargs": {"use_noise": False}},
        "no_shrinkage": {"shrink": False},
        "x_in_recurrence": {"model_kwargs": {"recurrence": "xz"}},
    }.items():
        ablations[label] = ours(adata, labels, layer=layer, **kw)[0]
    out["ablations"] = ablations
    print(f"   ablations {ablations}", flush=True)
    return out


def _na(values) -> np.ndarray:
    return np.asarray([v is None or (isinstance(v, float) and np.isnan(v)) for v in values])


def bench_lognormalised(adata, labels) -> dict:
    """The same simulation summarised from log-normalised X instead of counts (a check, not a target)."""
    summary = ct.pp.timecourse_summary(adata, "time", n_top_genes=None)
    y = labels[adata.var_names.get_indexer(summary.obs_names)]
    score, a, _ = ours(adata, labels, layer=None)
    sel = a.var["vrnn_selected"].to_numpy()
    response = a.var["vrnn_response"].to_numpy()[sel]
    flat_called_down = float(np.mean(response[y == "flat"] == "down"))
    out = {
        "zscore_kmeans": zscore_kmeans(summary, y),
        "shrunk_zscore_kmeans": ari(y, KMeans(K, n_init=10, random_state=0).fit_predict(summary.X)),
        "vrnn_cluster": score,
        "share_of_planted_flat_genes_called_down": round(flat_called_down, 3),
        "note": "Normalising each cell to a fixed total makes unchanged genes decrease when 45 % of genes rise "
        "(a compositional effect), so planted flat genes look like down-regulated ones in X.",
    }
    print(f"   log-normalised X: {out}", flush=True)
    return out


def bench_speed_and_determinism(adata) -> dict:
    """Train time of the VRNN alone on 2,000 genes (1 and 2 torch threads), and identical results for one seed."""
    summary = ct.pp.timecourse_summary(adata, "time", layer=SIM["layer"], n_top_genes=2_000)
    ct.models.VRNN.setup_anndata(summary)
    times, feats = {}, []
    for threads in (1, 2, 1):
        torch.set_num_threads(threads)
        model = ct.models.VRNN(summary, random_state=0)
        with timer() as t:
            model.train(accelerator="cpu", devices=1, progress=False, random_state=0, cpu_threads=threads)
        times.setdefault(threads, []).append(round(t["seconds"], 1))
        if threads == 1:
            feats.append(model.get_latent_representation())
        print(f"   train 2,000 genes, {threads} thread(s): {t['seconds']:.1f} s", flush=True)
    torch.set_num_threads(THREADS)
    a, b = (adata.copy() for _ in range(2))
    with timer() as t:
        ct.tl.vrnn_cluster(a, "time", K, layer=SIM["layer"], random_state=3, accelerator="cpu", devices=1)
    ct.tl.vrnn_cluster(b, "time", K, layer=SIM["layer"], random_state=3, accelerator="cpu", devices=1)
    best = min(min(v) for v in times.values())
    return {
        "genes": int(summary.n_obs),
        "time_points": int(summary.n_vars),
        "epochs": 150,
        "batch_size": 128,
        "train_seconds_by_threads": {str(k): v for k, v in times.items()},
        "train_seconds_best": best,
        "vrnn_cluster_seconds": round(t["seconds"], 1),
        "identical_features_same_seed": bool(np.array_equal(feats[0], feats[1])),
        "identical_clusters_same_seed": bool(
            a.var["vrnn_cluster"].equals(b.var["vrnn_cluster"])
            and np.array_equal(a.varm["X_vrnn"], b.varm["X_vrnn"], equal_nan=True)
        ),
    }


def main() -> None:
    torch.set_num_threads(THREADS)
    data = require_data()
    sim = ct.datasets.simulate_timecourse(SIM["n_genes"], random_state=SIM["random_state"])
    yeast = ct.datasets.cho1998_yeast(data)
    load_start = os.getloadavg()
    with timer() as total:
        results = {
            "simulated": bench_dataset(
                "simulated planted modules", sim, sim.var["module"].astype(str).to_numpy(), "counts"
            ),
            "yeast": bench_dataset("yeast cell cycle", yeast, yeast.var["phase_class"].astype(str).to_numpy(), None),
            "simulated_lognormalised": bench_lognormalised(sim, sim.var["module"].astype(str).to_numpy()),
            "speed": bench_speed_and_determinism(sim),
        }
    sp, ye = results["simulated"], results["yeast"]
    speed = results["speed"]
    targets = [
        {
            "name": "ARI on simulated planted modules",
            "target": ">= 0.9",
            "value": sp["vrnn_cluster"],
            "met": sp["vrnn_cluster"] >= 0.9,
        },
        {
            "name": "ARI on yeast 384 genes / 5 phases",
            "target": ">= 0.55",
            "value": ye["vrnn_cluster"],
            "met": ye["vrnn_cluster"] >= 0.55,
        },
        {
            "name": "train time for 2,000 genes on 2 CPU cores (s)",
            "target": "<= 60",
            "value": speed["train_seconds_best"],
            "met": speed["train_seconds_best"] <= 60,
        },
        {
            "name": "identical results for the same seed",
            "target": True,
            "value": speed["identical_features_same_seed"] and speed["identical_clusters_same_seed"],
            "met": speed["identical_features_same_seed"] and speed["identical_clusters_same_seed"],
        },
    ]
    results.update(
        {
            "command": "python benchmarks/vrnn.py",
            "machine": machine(),
            "torch_threads_used": THREADS,
            "settings": {
                "n_clusters": K,
                "seeds": list(SEEDS),
                "vrnn_cluster": "defaults (n_top_genes=2000, n_latent=4, n_hidden=32, 150 epochs, batch 128, Adam lr 1e-2 cosine-decayed to 5e-4, "
                "KL warm-up over half the epochs to beta=1, shrink=True)",
                "simulation": {**SIM, "time_points_h": [0, 1, 3, 6, 12, 24, 48], "cells_per_time": 100},
                "yeast": "ct.datasets.cho1998_yeast(labelled=True), X as given (standardised by the source)",
                "zscore_kmeans": "per-time means z-scored per gene, KMeans(5, n_init=10)",
                "kshape": "tslearn KShape(5) on mean-variance scaled per-time means",
                "shrunk_zscore_kmeans": "chromtools' shrunk standardised means (the VRNN input) with KMeans(5): ablation without the VRNN",
                "seed_vrnn": "re-implementation of XinyiZoe/VRNN_Gene_Clustering: decoder on h_t, beta=1e-6, "
                "sampled z averaged over time, unscaled means, Adam 1e-4, 2000 epochs, batch 400, 80/20 split; "
                "ari_with_posterior_means is a diagnostic with the same network and per-time posterior means",
            },
            "targets": targets,
            "total_seconds": round(total["seconds"], 1),
            "load_average_1_5_15min": {
                "start": [round(v, 2) for v in load_start],
                "end": [round(v, 2) for v in os.getloadavg()],
            },
            "peak_rss_mb": round(peak_rss_mb(), 1),
        }
    )
    write_results("vrnn", results)
    for t in targets:
        print(f"{'MET ' if t['met'] else 'MISS'} {t['name']}: {t['value']} (target {t['target']})")


if __name__ == "__main__":
    main()
