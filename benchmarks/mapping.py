"""Reference mapping benchmark on Granja 2019 bone marrow scATAC: chromtools vs fair scvi-tools peers and LSI baselines.

One command writes benchmarks/results/mapping.json:

    python benchmarks/mapping.py --workers 2 --threads 1 --deadline 07:28

Protocol (three disjoint uses of the data)
    choose   D5T1 -> D6T1 (reference donor D5T1, query donor D6T1): chromtools' settings are chosen here, by
             macro-F1 on the fine labels, among a short list of candidates fixed before the run (CANDIDATES).
    report   D6T1 -> D5T1 (reference D6T1, query D5T1), fine labels (16 types): every method, one run. The
             chosen chromtools settings are reported over several seeds (mean +- sd); each peer runs once.
    unknown  D6T1 minus one cell type -> D5T1 with it (types fixed before the run: HELD_OUT): AUROC of the
             per-cell novelty score for telling the held-out type's cells apart.
    cross    the query arrives with its own peaks (cross-dataset case): fragments are simulated from the D5T1
             counts (each count one fragment around its peak's centre), peaks are "re-called" (shifted,
             resized, 10 % missing, 10 % extra), the query is counted in them with ct.pp.peak_matrix and
             mapped (a) through overlap alignment (ct.tl.map_query feature_matching='auto') and (b) after
             re-counting its fragments in the reference's peaks with ct.pp.peak_matrix.
    peak_matrix  ct.pp.peak_matrix on the real PBMC fragments (counts checked against a per-peak count) and on a
             simulated 4-million-fragment file: fragments per second (wall and per CPU-second). This task runs
             alone, before the others start (ALONE).

Methods (report split)
    chromtools      ct.tl.train_reference (PeakSCANVI, semi-supervised) + ct.tl.map_query + ct.tl.transfer_labels;
                    an ensemble candidate (n_models 3) trains 3 references with different seeds, maps the query
                    onto each and averages their votes (transfer_labels(use_rep=[the 3 keys])); its reference
                    and query times are the sums over the 3 members
    peakvi_200      scvi-tools PEAKVI surgery (scArches settings: encode_covariates, layer norm, dropout 0.2),
                    200 epochs reference and query, weight decay really 0 in the query (passed as
                    train(weight_decay=0.0): PEAKVI.train overwrites plan_kwargs['weight_decay'] with its own)
    scanvi_200      scvi-tools SCANVI on binarised peaks (supervised peer): SCVI (scArches settings) 200 epochs,
                    SCANVI.from_scvi_model + 20 epochs (scvi-tools' scArches tutorial), query surgery 100 epochs
                    with weight decay 0 (the tutorial's setting)
    poissonvi_200   scvi-tools POISSONVI surgery, 200 epochs, weight decay 0 (run last; skipped past the deadline)
    lsi_knn         TF-IDF + LSI (ct.pp.lsi, 50 components) of the reference, query projected onto it
    lsi_lda_knn     supervised LSI: the same LSI, then linear discriminant analysis fitted on the reference labels
Every method's labels are transferred with one rule (ct.tl.transfer_labels, 15 neighbours, the default
label_prior='balanced'), so the numbers compare embeddings; each method also records its accuracy and macro-F1
with label_prior='reference' (votes as cast). The balanced default was chosen on the choose split (D5T1 -> D6T1);
the choose task's candidates record both. Each task runs in a fresh process; wall and CPU seconds are both
recorded (the machine is shared: CPU seconds are the fairer speed measure).
"""

from __future__ import annotations

import argparse
import atexit
import datetime as dt
import json
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, git_commit, machine, peak_rss_mb, require_data, write_results

N_NEIGHBORS = 15
LABEL = "cell_type"
SEEDS = [0, 1, 2]
#: chromtools candidates, fixed before the run; chosen on D5T1 -> D6T1 only. model_kwargs go to
#: ct.tl.train_reference; n_models > 1 is an ensemble: that many references (seeds seed*n .. seed*n + n-1),
#: each query mapped onto each, and ct.tl.transfer_labels(use_rep=[every member's key]) averages their votes
CANDIDATES = {
    "defaults": {"model_kwargs": {}, "n_models": 1},
    "classification_weight_5": {"model_kwargs": {"classification_weight": 5.0}, "n_models": 1},
    "input_dropout_0.2": {"model_kwargs": {"input_dropout": 0.2}, "n_models": 1},
    "defaults_x3": {"model_kwargs": {}, "n_models": 3},
    "input_dropout_0.2_x3": {"model_kwargs": {"input_dropout": 0.2}, "n_models": 3},
}
#: held-out types for unknown detection, fixed before the run: one lymphoid, one NK, one myeloid progenitor
HELD_OUT = ["17_B", "25_NK", "07_GMP"]
SMOKE = os.environ.get("CT_BENCH_SMOKE") == "1"  # pipeline check only: few cells, 2 epochs


class Clock:
    """Wall and CPU seconds of a block (CPU: this process, all threads)."""

    def __enter__(self):
        self.w, self.c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.w, time.process_time() - self.c


# ----------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------
def load(split: str, drop_type: str | None = None):
    import chromtools as ct

    a = ct.datasets.granja2019(DATA)
    a.obs["batch"] = a.obs["batch"].astype(str).astype("category")
    a.obs[LABEL] = a.obs[LABEL].astype(str).astype("category")
    ref_batch = "BMMC_D5T1" if split == "choose" else "BMMC_D6T1"
    is_ref = (a.obs["batch"] == ref_batch).to_numpy()
    ref, query = a[is_ref].copy(), a[~is_ref].copy()
    if drop_type is not None:
        ref = ref[ref.obs[LABEL] != drop_type].copy()
        ref.obs[LABEL] = ref.obs[LABEL].cat.remove_unused_categories()
    if SMOKE:
        ref, query = ref[::10].copy(), query[::10].copy()
    return ref, query


def epochs(n: int | None) -> int | None:
    return 2 if SMOKE else n


# ----------------------------------------------------------------------------------------------
# scoring: one label-transfer rule for every embedding
# ----------------------------------------------------------------------------------------------
def score(ref, query, z_ref, z_q, *, unknown: list[str] | None = None) -> dict:
    import anndata as ad
    import numpy as np

    import chromtools as ct

    r = ad.AnnData(obs=ref.obs[["batch", LABEL]].copy())
    q = ad.AnnData(obs=query.obs[["batch", LABEL]].copy())
    z_ref, z_q = (z_ref, z_q) if isinstance(z_ref, list) else ([z_ref], [z_q])
    reps = [f"X_emb_{m}" for m in range(len(z_ref))]  # several: an ensemble, whose votes are averaged
    for rep, zr, zq in zip(reps, z_ref, z_q, strict=True):
        r.obsm[rep], q.obsm[rep] = np.asarray(zr, np.float32), np.asarray(zq, np.float32)
    use_rep = reps[0] if len(reps) == 1 else reps
    with Clock() as c:
        ct.tl.transfer_labels(q, r, LABEL, use_rep=use_rep, n_neighbors=N_NEIGHBORS, key_added="pred")
    known_labels = sorted(set(ref.obs[LABEL].astype(str)))
    res = {"label_transfer_s": c.wall}
    s_pred = ct.metrics.label_transfer_scores(q, LABEL, "pred", reference_labels=known_labels)
    # the label before any Unknown call: the argmax of the votes
    probs, columns = q.obsm["pred_probabilities"], np.asarray(q.uns["pred"]["labels"])
    q.obs["argmax"] = columns[probs.argmax(axis=1)]
    s_arg = ct.metrics.label_transfer_scores(q, LABEL, "argmax", reference_labels=known_labels)
    res.update(accuracy=s_arg["accuracy"], macro_f1=s_arg["macro_f1"])
    # the same votes with the reference's composition as their prior (label_prior='reference')
    ct.tl.transfer_labels(
        q, r, LABEL, use_rep=use_rep, n_neighbors=N_NEIGHBORS, label_prior="reference", novelty=False, key_added="ref"
    )
    s_ref = ct.metrics.label_transfer_scores(q, LABEL, "ref", reference_labels=known_labels)
    res["label_prior_reference"] = {"accuracy": s_ref["accuracy"], "macro_f1": s_ref["macro_f1"]}
    res["with_unknown_calls"] = {k: v for k, v in s_pred.items() if k != "n_cells"}
    res["novelty_calibration"] = q.uns["pred"].get("calibration")
    if unknown:
        is_unknown = q.obs[LABEL].astype(str).isin(unknown).to_numpy()
        for col in ("novelty", "ambiguity", "uncertainty"):
            res[f"unknown_auroc_{col}"] = ct.metrics.unknown_detection_auroc(is_unknown, q.obs[f"pred_{col}"])
    rep = ct.metrics.classification_report(q.obs[LABEL], q.obs["argmax"])
    res["per_class_f1"] = {str(k): round(float(v), 4) for k, v in rep["f1"].items()}
    return res


# ----------------------------------------------------------------------------------------------
# methods
# ----------------------------------------------------------------------------------------------
def member_keys(n_models: int) -> list[str]:
    """obsm keys of an ensemble's members (one model: the default key)."""
    return ["X_reference"] if n_models == 1 else [f"X_reference_{m}" for m in range(n_models)]


def chromtools_run(ref, query, seed: int, candidate: dict, unknown=None):
    """Train the candidate's reference(s) and map the query; an ensemble's times are summed over its members."""
    import chromtools as ct

    r, q = ref.copy(), query.copy()
    n = int(candidate["n_models"])
    keys, models = member_keys(n), []
    t_ref = {"wall": 0.0, "cpu": 0.0}
    t_q = {"wall": 0.0, "cpu": 0.0}
    for m, key in enumerate(keys):
        model = Path(tempfile.mkdtemp(prefix="chromtools_reference_"))  # the saved reference, removed at exit
        atexit.register(shutil.rmtree, model, ignore_errors=True)
        models.append(model)
        with Clock() as t_r:
            ct.tl.train_reference(
                r,
                "batch",
                LABEL,
                model_dir=model,
                key_added=key,
                random_state=seed * n + m,
                max_epochs=epochs(None),
                model_kwargs=candidate["model_kwargs"],
            )
        with Clock() as t_m:
            ct.tl.map_query(q, model, key_added=key, random_state=seed * n + m, max_epochs=epochs(None))
        for total, clock in ((t_ref, t_r), (t_q, t_m)):
            total["wall"] += clock.wall
            total["cpu"] += clock.cpu
    infos = [q.uns[k] for k in keys]
    res = score(r, q, [r.obsm[k] for k in keys], [q.obsm[k] for k in keys], unknown=unknown)
    res.update(
        n_models=n,
        member_seeds=[seed * n + m for m in range(n)],
        reference_s=t_ref["wall"],
        reference_cpu_s=t_ref["cpu"],
        query_s=t_q["wall"],
        query_cpu_s=t_q["cpu"],
        reference_epochs=[int(r.uns[k]["params"]["n_epochs"]) for k in keys],
        query_epochs=[int(i["n_epochs"]) for i in infos],
        frozen_identical=all(bool(i["frozen_identical"]) for i in infos),
        frozen_max_abs_diff=max(float(i["frozen_max_abs_diff"]) for i in infos),
        n_trained_parameters=int(infos[0]["n_trained_parameters"]),
        latent_dim=int(r.obsm[keys[0]].shape[1]),
    )
    return res, models, r


def task_choose(args) -> dict:
    ref, query = load("choose")
    out = {}
    for name, candidate in CANDIDATES.items():
        res, _, _ = chromtools_run(ref, query, 0, candidate)
        res.pop("per_class_f1")
        out[name] = res
        print(f"    choose {name}: acc {res['accuracy']:.3f} F1 {res['macro_f1']:.3f}", flush=True)
    best = max(out, key=lambda k: out[k]["macro_f1"])
    return {"candidates": out, "chosen": best, "chosen_candidate": CANDIDATES[best], "criterion": "macro_f1"}


def task_chromtools(args) -> dict:
    import numpy as np

    ref, query = load("report")
    per_seed, model0, ref0 = {}, None, None
    for seed in SEEDS[: 1 if SMOKE else None]:
        res, model, r = chromtools_run(ref, query, seed, args["chosen_candidate"])
        per_seed[str(seed)] = res
        if model0 is None:
            model0, ref0 = model, r
        print(f"    chromtools seed {seed}: acc {res['accuracy']:.3f} F1 {res['macro_f1']:.3f}", flush=True)
    summary = {}
    for k in ("accuracy", "macro_f1", "reference_s", "reference_cpu_s", "query_s", "query_cpu_s"):
        v = np.array([r[k] for r in per_seed.values()])
        summary[k] = {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if v.size > 1 else 0.0}
    for k in ("accuracy", "macro_f1"):
        v = np.array([r["label_prior_reference"][k] for r in per_seed.values()])
        summary[f"label_prior_reference_{k}"] = {
            "mean": float(v.mean()),
            "sd": float(v.std(ddof=1)) if v.size > 1 else 0.0,
        }
    chosen = args["chosen_candidate"]
    out = {
        "settings": args["chosen_name"],
        "model_kwargs": chosen["model_kwargs"],
        "n_models": chosen["n_models"],
        "seeds": per_seed,
    }
    out["mean_sd"] = summary
    out["cross_dataset"] = cross_dataset(model0, ref0, query)
    return out


def cross_dataset(models: list, ref, query) -> dict:
    """The query arrives with its own peaks: overlap alignment vs re-counting its fragments in the reference peaks."""
    import gzip

    import numpy as np
    import pandas as pd
    import scipy.sparse as sp

    import chromtools as ct

    rng = np.random.default_rng(0)
    X = sp.csr_matrix(query.X).astype(np.int64)
    coo = X.tocoo()
    n = coo.data.astype(np.int64)
    cell = np.repeat(coo.row, n)
    peak = np.repeat(coo.col, n)
    centre = ((query.var["start"].to_numpy() + query.var["end"].to_numpy()) // 2)[peak]
    length = rng.integers(60, 300, cell.size)
    mid = centre + np.round(rng.normal(0, 120, cell.size)).astype(np.int64)
    start = np.maximum(mid - length // 2, 0)
    frags = pd.DataFrame(
        {
            "chrom": query.var["chrom"].astype(str).to_numpy()[peak],
            "start": start,
            "end": start + length,
            "barcode": query.obs_names.to_numpy()[cell],
            "count": 1,
        }
    )
    frags = frags.sort_values(["chrom", "start"], kind="stable")
    out: dict = {"n_fragments": len(frags), "fragment_model": "one fragment per count, centre ~ N(peak centre, 120 bp)"}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fragments.tsv.gz"
        with gzip.open(path, "wt", compresslevel=1) as fh:
            frags.to_csv(fh, sep="\t", header=False, index=False)
        # the query's own peaks: re-called with other boundaries, 10 % missed, 10 % extra (background)
        v = query.var
        keep = rng.random(v.shape[0]) >= 0.1
        s = v["start"].to_numpy() + rng.integers(-200, 200, v.shape[0])
        w = rng.integers(300, 800, v.shape[0])
        own = pd.DataFrame({"chrom": v["chrom"].astype(str).to_numpy(), "start": np.maximum(s, 0)})
        own["end"] = own["start"] + w
        own = own[keep]
        extra = own.sample(frac=0.1, random_state=0).copy()
        extra["start"] += 5_000
        extra["end"] += 5_000
        own = pd.concat([own, extra]).drop_duplicates(["chrom", "start", "end"]).reset_index(drop=True)
        base = query.copy()
        base.uns["files"] = {"fragments": str(path)}
        with Clock() as c:
            q_own = ct.pp.peak_matrix(base, own)
        out["own_peaks"] = {
            "n_peaks": int(own.shape[0]),
            "peak_matrix_s": c.wall,
            "fragments_per_second": q_own.uns["peak_matrix"]["fragments_per_second"],
        }
        with Clock() as c:
            q_re = ct.pp.peak_matrix(base, ref)
        exact = np.asarray((q_re.X != sp.csr_matrix(query.X)).sum())
        out["recount"] = {"peak_matrix_s": c.wall, "entries_differing_from_original_counts": int(exact)}
        for name, q in (("overlap_alignment", q_own), ("peak_matrix_recount", q_re)):
            q.obs["batch"] = query.obs["batch"].to_numpy()
            keys = member_keys(len(models))
            with Clock() as t_q:
                for m, (key, model) in enumerate(zip(keys, models, strict=True)):
                    ct.tl.map_query(q, model, key_added=key, random_state=m, max_epochs=epochs(None))
            res = score(ref, query, [ref.obsm[k] for k in keys], [q.obsm[k] for k in keys])
            res.pop("per_class_f1")
            res["query_s"] = t_q.wall
            res["features"] = dict(q.uns[keys[0]]["features"].items())
            out[name] = res
            print(f"    cross {name}: acc {res['accuracy']:.3f} F1 {res['macro_f1']:.3f}", flush=True)
        # the LSI baseline through the same two routes
        r = ref.copy()
        ct.pp.lsi(r, 50, random_state=0)
        for name, q in (("lsi_overlap_alignment", q_own), ("lsi_peak_matrix_recount", q_re)):
            ct.pp.lsi(q, reference=r)
            res = score(r, query, r.obsm["X_lsi"], q.obsm["X_lsi"])
            out[name] = {"accuracy": res["accuracy"], "macro_f1": res["macro_f1"]}
    return out


def task_heldout(args) -> dict:
    out = {}
    for t in HELD_OUT[: 1 if SMOKE else None]:
        ref, query = load("report", drop_type=t)
        res, _, _ = chromtools_run(ref, query, 0, args["chosen_candidate"], unknown=[t])
        res.pop("per_class_f1")
        out[t] = res
        print(f"    held out {t}: AUROC novelty {res['unknown_auroc_novelty']:.3f}", flush=True)
    return out


def task_lsi(args) -> dict:
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    import chromtools as ct

    ref, query = load("report")
    r, q = ref.copy(), query.copy()
    with Clock() as t_ref:
        ct.pp.lsi(r, 50, random_state=0)
    with Clock() as t_q:
        ct.pp.lsi(q, reference=r)
    out = {"lsi_knn": score(r, q, r.obsm["X_lsi"], q.obsm["X_lsi"])}
    out["lsi_knn"].update(reference_s=t_ref.wall, reference_cpu_s=t_ref.cpu, query_s=t_q.wall, query_cpu_s=t_q.cpu)
    with Clock() as t_lda:
        lda = LinearDiscriminantAnalysis().fit(r.obsm["X_lsi"], r.obs[LABEL].astype(str))
    zr, zq = lda.transform(r.obsm["X_lsi"]), lda.transform(q.obsm["X_lsi"])
    out["lsi_lda_knn"] = score(r, q, zr, zq)
    out["lsi_lda_knn"].update(
        reference_s=t_ref.wall + t_lda.wall,
        reference_cpu_s=t_ref.cpu + t_lda.cpu,
        query_s=t_q.wall,
        query_cpu_s=t_q.cpu,
    )
    out["lsi_lda_knn"]["lda_classifier_accuracy"] = float(
        (lda.predict(q.obsm["X_lsi"]) == q.obs[LABEL].astype(str)).mean()
    )
    return out


def _n_epochs(model) -> int:
    hist = model.history or {}
    key = "elbo_train" if "elbo_train" in hist else next(iter(hist), None)
    return len(hist[key]) if key else 0


def _train_zero_decay(model, max_epochs: int, **kwargs) -> None:
    """Train with weight decay really 0: as a train() argument where train() has one (it overrides plan_kwargs)."""
    import inspect

    params = inspect.signature(model.train).parameters
    if "weight_decay" in params:
        kwargs["weight_decay"] = 0.0
    kwargs["plan_kwargs"] = {**kwargs.get("plan_kwargs", {}), "weight_decay": 0.0}
    model.train(max_epochs=max_epochs, enable_progress_bar=False, **kwargs)


def task_scvi(args) -> dict:
    import numpy as np
    import scvi

    from chromtools.models import frozen_weight_drift, reference_state_dict

    kind = args["kind"]
    seed = 0
    scvi.settings.seed = seed
    ref, query = load("report")
    r, q = ref.copy(), query.copy()
    extra = {}
    with Clock() as t_ref:
        if kind == "scanvi":
            for a in (r, q):
                a.X = (a.X > 0).astype(np.float32)
            r.obs["scanvi_labels"] = r.obs[LABEL].astype(str)
            scvi.model.SCVI.setup_anndata(r, batch_key="batch", labels_key="scanvi_labels")
            vae = scvi.model.SCVI(
                r,
                n_layers=2,
                encode_covariates=True,
                deeply_inject_covariates=False,
                use_layer_norm="both",
                use_batch_norm="none",
            )
            vae.train(max_epochs=epochs(200), enable_progress_bar=False)
            model = scvi.model.SCANVI.from_scvi_model(vae, unlabeled_category="Unknown")
            model.train(max_epochs=epochs(20), n_samples_per_label=100, enable_progress_bar=False)
            extra["scvi_pretrain_epochs"] = _n_epochs(vae)
        else:
            cls = scvi.model.PEAKVI if kind == "peakvi" else scvi.external.POISSONVI
            cls.setup_anndata(r, batch_key="batch")
            kwargs = {"encode_covariates": True, "dropout_rate": 0.2}
            if kind == "peakvi":
                kwargs.update(use_layer_norm="both", use_batch_norm="none")
            model = cls(r, **kwargs)
            model.train(max_epochs=epochs(200), enable_progress_bar=False)
        z_ref = model.get_latent_representation()
    state = reference_state_dict(model)
    query_epochs = 100 if kind == "scanvi" else 200
    with Clock() as t_q:
        if kind == "scanvi":
            q.obs["scanvi_labels"] = "Unknown"
        type(model).prepare_query_anndata(q, model)
        qm = type(model).load_query_data(q, model, freeze_dropout=True)
        _train_zero_decay(qm, epochs(query_epochs))
        z_q = qm.get_latent_representation()
    drift = frozen_weight_drift(state, qm)
    res = score(r, q, z_ref, z_q)
    if kind == "scanvi":
        pred = np.asarray(qm.predict()).astype(str)
        truth = q.obs[LABEL].astype(str).to_numpy()
        import chromtools as ct

        extra["classifier_accuracy"] = float((pred == truth).mean())
        extra["classifier_macro_f1"] = float(ct.metrics.macro_f1(truth, pred))
    res.update(
        reference_s=t_ref.wall,
        reference_cpu_s=t_ref.cpu,
        query_s=t_q.wall,
        query_cpu_s=t_q.cpu,
        reference_epochs=_n_epochs(model),
        query_epochs=_n_epochs(qm),
        frozen_identical=bool(drift["identical"].all()),
        frozen_max_abs_diff=float(np.nan_to_num(drift["max_abs_diff"].to_numpy(), nan=np.inf).max()),
        latent_dim=int(np.asarray(z_ref).shape[1]),
        scvi_tools=scvi.__version__,
        **extra,
    )
    return res


def task_peak_matrix(args) -> dict:
    import gzip

    import numpy as np
    import pandas as pd

    import chromtools as ct

    mdata = ct.datasets.pbmc_multiome(DATA)
    atac = mdata["atac"]
    out: dict = {}
    for counting in ("fragments", "cut_sites"):
        runs = [ct.pp.peak_matrix(mdata, atac, counting=counting) for _ in range(5)]
        info = [r.uns["peak_matrix"] for r in runs]
        n = info[0]["n_fragments_read"]
        out[f"pbmc_{counting}"] = {
            "n_fragments": n,
            "n_cells": int(runs[0].n_obs),
            "n_peaks": int(runs[0].n_vars),
            "median_s": float(np.median([i["seconds"] for i in info])),
            "first_call_s": float(info[0]["seconds"]),  # includes loading (or compiling) the numba tokenizer
            "fragments_per_second": float(n / np.median([i["seconds"] for i in info])),
            "fragments_per_cpu_second": float(n / np.median([i["cpu_seconds"] for i in info])),
        }
    # exactness against an independent per-peak count, and Cell Ranger's own cut-site matrix
    frags = ct.io.read_fragments(atac.uns["files"]["fragments"])
    rows = atac.obs_names.get_indexer(frags["barcode"])
    chrom = frags["chrom"].astype(str).to_numpy()
    expected = np.zeros(atac.shape, np.int64)
    for j, (c, s, e) in enumerate(atac.var[["chrom", "start", "end"]].itertuples(index=False)):
        hit = (chrom == c) & (frags["start"].to_numpy() < e) & (frags["end"].to_numpy() > s) & (rows >= 0)
        np.add.at(expected[:, j], rows[hit], 1)
    ours = ct.pp.peak_matrix(mdata, atac).X.toarray()
    out["pbmc_identical_to_per_peak_count"] = bool((ours == expected).all())
    cuts = ct.pp.peak_matrix(mdata, atac, counting="cut_sites").X.toarray()
    tenx = np.asarray(atac.X.todense())
    covered = cuts.sum(axis=0) > 0
    out["pbmc_cut_sites_vs_cellranger"] = {
        "peaks_inside_fragment_windows": int(covered.sum()),
        "peaks_identical_in_every_cell": int((cuts[:, covered] == tenx[:, covered]).all(axis=0).sum()),
    }
    # a larger simulated file: 4 million fragments, 5,000 barcodes, 100,000 peaks
    rng = np.random.default_rng(0)
    n = 400_000 if SMOKE else 4_000_000
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sim.tsv.gz"
        chrom = np.repeat(["chr1", "chr2", "chr3", "chr4"], n // 4)
        start = np.sort(rng.integers(0, 200_000_000, n).reshape(4, -1), axis=1).ravel()
        bcs = np.array([f"BC{i:06d}-1" for i in range(5000)])
        df = pd.DataFrame({"c": chrom, "s": start, "e": start + rng.integers(50, 600, n), "b": rng.choice(bcs, n)})
        df["n"] = 1
        with gzip.open(path, "wt", compresslevel=1) as fh:
            df.to_csv(fh, sep="\t", header=False, index=False)
        peaks = pd.DataFrame({"chrom": np.repeat(["chr1", "chr2", "chr3", "chr4"], 25_000)})
        peaks["start"] = np.tile(np.arange(25_000) * 8_000, 4)
        peaks["end"] = peaks["start"] + 500
        for n_jobs in (1, 2):
            runs = [ct.pp.peak_matrix(path, peaks, n_jobs=n_jobs).uns["peak_matrix"] for _ in range(2)]
            best = min(runs, key=lambda i: i["seconds"])
            out[f"simulated_4M_n_jobs_{n_jobs}"] = {
                "n_fragments": n,
                "seconds": best["seconds"],
                "fragments_per_second": best["fragments_per_second"],
                "fragments_per_cpu_second": n / best["cpu_seconds"],
            }
    return out


TASKS = {
    "choose": (task_choose, []),
    "chromtools": (task_chromtools, ["choose"]),
    "heldout": (task_heldout, ["choose"]),
    "lsi": (task_lsi, []),
    "peak_matrix": (task_peak_matrix, []),
    "peakvi_200": (task_scvi, []),
    "scanvi_200": (task_scvi, []),
    "poissonvi_200": (task_scvi, []),
}
#: speed-only tasks: run one at a time, before the others start, so that nothing shares their cores
ALONE = ["peak_matrix"]
#: start order when a worker frees up (dependencies permitting): long peers early, POISSONVI last
ORDER = ["choose", "peakvi_200", "scanvi_200", "chromtools", "heldout", "lsi", "peak_matrix", "poissonvi_200"]


def run_one(name: str, args: dict, threads: int, queue) -> None:
    try:
        import logging
        import warnings

        import torch

        torch.set_num_threads(threads)
        warnings.filterwarnings("ignore")
        import scvi

        scvi.settings.verbosity = logging.WARNING
        for log in ("lightning", "lightning.pytorch", "pytorch_lightning", "scvi"):
            logging.getLogger(log).setLevel(logging.ERROR)
        if name.endswith("_200"):
            args = {**args, "kind": name.split("_")[0]}
        with Clock() as c:
            res = TASKS[name][0](args)
        queue.put((name, {"ok": True, **res, "task_wall_s": c.wall, "peak_rss_mb": peak_rss_mb()}))
    except Exception as err:  # noqa: BLE001 - report any failure of one task and go on
        queue.put((name, {"ok": False, "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}))


def schedule(names: list[str], workers: int, threads: int, deadline: dt.datetime | None) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    results: dict = {}
    running: dict = {}
    pending = [n for n in ORDER if n in names]
    start = time.perf_counter()
    while pending or running:
        now = dt.datetime.now(dt.UTC)
        if deadline is not None and now >= deadline:
            for name, proc in running.items():
                proc.terminate()
                results[name] = {"ok": False, "error": f"stopped at the deadline {deadline:%H:%M} UTC (time budget)"}
            for name in pending:
                results[name] = {"ok": False, "error": f"not started before the deadline {deadline:%H:%M} UTC"}
            break
        for name in list(pending):
            if len(running) >= workers:
                break
            deps = TASKS[name][1]
            if any(d in names and d not in results for d in deps):
                continue
            args = {}
            if "choose" in deps:
                chosen = results.get("choose", {})
                if not chosen.get("ok"):
                    results[name] = {"ok": False, "error": "the choice of settings failed"}
                    pending.remove(name)
                    continue
                args = {"chosen_candidate": chosen["chosen_candidate"], "chosen_name": chosen["chosen"]}
            proc = ctx.Process(target=run_one, args=(name, args, threads, queue))
            proc.start()
            running[name] = proc
            pending.remove(name)
            print(f"[{time.perf_counter() - start:6.0f} s] started {name}", flush=True)
        try:
            name, res = queue.get(timeout=5)
        except Exception:  # noqa: BLE001 - queue.Empty: nothing finished yet
            continue
        running.pop(name).join()
        results[name] = res
        status = "ok" if res["ok"] else "FAILED: " + res["error"]
        print(f"[{time.perf_counter() - start:6.0f} s] finished {name}: {status}", flush=True)
    return results


def targets(res: dict) -> dict:
    """Every target the tasks that ran can speak to (``--only peak_matrix`` gives the peak_matrix ones)."""
    out = _peak_matrix_targets(res)
    if "chromtools" not in res:
        return out
    ours = res["chromtools"]
    if not ours.get("ok"):
        return {"mapping": {"met": False, "note": "chromtools did not run"}, **out}
    return {**_mapping_targets(res, ours), **out}


def _mapping_targets(res: dict, ours: dict) -> dict:
    out: dict = {}
    acc, f1 = ours["mean_sd"]["accuracy"]["mean"], ours["mean_sd"]["macro_f1"]["mean"]
    out["granja_fine_accuracy>=0.75"] = {"value": acc, "met": acc >= 0.75}
    out["granja_fine_macro_f1>=0.62"] = {"value": f1, "met": f1 >= 0.62}
    peers = {}
    for m in ("peakvi_200", "scanvi_200", "poissonvi_200"):
        if res.get(m, {}).get("ok"):
            peers[m] = res[m]
    if res.get("lsi", {}).get("ok"):
        peers.update({m: res["lsi"][m] for m in ("lsi_knn", "lsi_lda_knn")})
    out["above_every_peer_run"] = {
        "value": {"accuracy": acc, "macro_f1": f1},
        "peers": {m: {"accuracy": p["accuracy"], "macro_f1": p["macro_f1"]} for m, p in peers.items()},
        "met": bool(peers) and all(acc > p["accuracy"] and f1 > p["macro_f1"] for p in peers.values()),
        "peers_not_run": [m for m in ("peakvi_200", "scanvi_200", "poissonvi_200") if not res.get(m, {}).get("ok")],
    }
    deep = {m: p for m, p in peers.items() if m.endswith("_200")}
    if deep:
        best = max(deep, key=lambda m: deep[m]["macro_f1"])
        p = deep[best]
        for what, need in (("query", 5.0), ("reference", 3.0)):
            mine = ours["mean_sd"][f"{what}_s"]["mean"]
            mine_cpu = ours["mean_sd"][f"{what}_cpu_s"]["mean"]
            ratio = p[f"{what}_s"] / mine
            ratio_cpu = p[f"{what}_cpu_s"] / mine_cpu
            out[f"{what}_speedup_vs_best_200_epoch_peer>={need:g}"] = {
                "best_peer": best,
                "value_wall": ratio,
                "value_cpu": ratio_cpu,
                "met": min(ratio, ratio_cpu) >= need,
            }
    held = res.get("heldout", {})
    if held.get("ok"):
        vals = {t: held[t]["unknown_auroc_novelty"] for t in HELD_OUT if t in held}
        out["granja_heldout_unknown_auroc>=0.95"] = {
            "value": vals,
            "met": bool(vals) and min(vals.values()) >= 0.95,
            "rule": "met only if every held-out type reaches 0.95",
        }
    frozen = ours["seeds"][str(SEEDS[0])]["frozen_identical"]
    out["frozen_reference_weights_bit_identical"] = {"value": frozen, "met": bool(frozen)}
    return out


def _peak_matrix_targets(res: dict) -> dict:
    out: dict = {}
    pm = res.get("peak_matrix", {})
    if pm.get("ok"):
        fps = pm["pbmc_fragments"]["fragments_per_second"]
        out["peak_matrix_pbmc>=2M_fragments_per_s"] = {
            "value": fps,
            "value_per_cpu_second": pm["pbmc_fragments"]["fragments_per_cpu_second"],
            "simulated_4M_best": max(pm[k]["fragments_per_second"] for k in pm if k.startswith("simulated_4M")),
            "met": fps >= 2e6,
            "note": "median of 5 calls; the task ran alone, before the others started",
        }
        out["peak_matrix_identical_to_reference_count"] = {
            "value": pm["pbmc_identical_to_per_peak_count"],
            "met": bool(pm["pbmc_identical_to_per_peak_count"]),
        }
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2, help="tasks run at once")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per task")
    parser.add_argument("--only", default=",".join(ORDER), help="comma-separated tasks")
    parser.add_argument("--deadline", default=None, help="HH:MM UTC: stop tasks still running, skip unstarted ones")
    parser.add_argument("--out", default="mapping", help="results name (benchmarks/results/<out>.json)")
    args = parser.parse_args(argv)
    require_data()
    names = [n for n in args.only.split(",") if n]
    bad = set(names) - set(TASKS)
    if bad:
        parser.error(f"unknown tasks {sorted(bad)}; choose from {list(TASKS)}")
    deadline = None
    if args.deadline:
        h, m = (int(x) for x in args.deadline.split(":"))
        deadline = dt.datetime.now(dt.UTC).replace(hour=h, minute=m, second=0, microsecond=0)
    import scvi

    start = time.perf_counter()
    results = schedule([n for n in names if n in ALONE], 1, args.threads, deadline)
    results.update(schedule([n for n in names if n not in ALONE], args.workers, args.threads, deadline))
    summary = {
        "description": __doc__.split("\n\n")[0],
        "command": "python benchmarks/mapping.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "git_commit": git_commit(),
        "machine": {
            **machine(),
            "scvi_tools": scvi.__version__,
            "note": f"up to {args.workers} tasks at once; {', '.join(ALONE)} ran alone, before them",
        },
        "workers": args.workers,
        "threads_per_task": args.threads,
        "n_neighbors": N_NEIGHBORS,
        "seeds": SEEDS,
        "candidates": CANDIDATES,
        "held_out_types": HELD_OUT,
        "smoke": SMOKE,
        "total_wall_s": time.perf_counter() - start,
        "results": results,
        "targets": targets(results),
    }
    write_results(args.out, summary)
    print(json.dumps(summary["targets"], indent=2))


if __name__ == "__main__":
    main()
