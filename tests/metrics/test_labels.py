from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

import chromtools as ct


def test_accuracy_and_macro_f1_match_sklearn():
    rng = np.random.default_rng(0)
    t = rng.choice(list("abcd"), size=200)
    p = np.where(rng.random(200) < 0.7, t, rng.choice(list("abcd"), size=200))
    assert ct.metrics.accuracy(t, p) == pytest.approx(accuracy_score(t, p))
    assert ct.metrics.macro_f1(t, p) == pytest.approx(f1_score(t, p, average="macro"))
    # a predicted-only class ("Unknown") is not averaged over but costs recall
    p2 = p.copy().astype(object)
    p2[:20] = "Unknown"
    expected = f1_score(t, p2, labels=sorted(set(t)), average="macro")
    assert ct.metrics.macro_f1(t, p2) == pytest.approx(expected)


def test_classification_report_columns_and_confusions():
    t = ["A", "A", "A", "B", "B", "C"]
    p = ["A", "B", "B", "B", "B", "A"]
    rep = ct.metrics.classification_report(t, p)
    assert list(rep.index) == ["A", "B", "C"]
    assert rep.loc["A", "recall"] == pytest.approx(1 / 3) and rep.loc["A", "precision"] == pytest.approx(1 / 2)
    assert rep.loc["B", "precision"] == pytest.approx(2 / 4) and rep.loc["B", "recall"] == 1.0
    assert rep.loc["A", "most_confused_with"] == "B" and rep.loc["A", "confused_fraction"] == pytest.approx(2 / 3)
    assert rep.loc["C", "f1"] == 0.0 and rep.loc["B", "most_confused_with"] == ""
    assert rep["support"].sum() == 6


def test_unknown_auroc_matches_sklearn_with_ties():
    rng = np.random.default_rng(1)
    y = rng.random(300) < 0.2
    u = np.round(rng.random(300) + 0.5 * y, 1)  # coarse values: many ties
    assert ct.metrics.unknown_detection_auroc(y, u) == pytest.approx(roc_auc_score(y, u))
    assert ct.metrics.unknown_detection_auroc([True, False], [1.0, 0.0]) == 1.0
    assert ct.metrics.unknown_detection_auroc([True, False], [0.0, 1.0]) == 0.0


def test_label_transfer_scores_from_obs():
    obs = pd.DataFrame(
        {
            "true": ["A", "A", "B", "B", "N", "N"],
            "pred": ["A", "Unknown", "B", "A", "Unknown", "B"],
            "pred_uncertainty": [0.1, 0.8, 0.2, 0.3, 0.9, 0.7],
        },
        index=[f"c{i}" for i in range(6)],
    )
    ad = AnnData(X=np.zeros((6, 1)), obs=obs)
    s = ct.metrics.label_transfer_scores(ad, "true", "pred", reference_labels=["A", "B"])
    assert s["n_unknown_cells"] == 2 and s["accuracy"] == pytest.approx(0.5)
    assert s["fraction_unknown_called"] == pytest.approx(0.25) and s["unknown_recall"] == pytest.approx(0.5)
    assert s["unknown_auroc"] == pytest.approx(roc_auc_score([0, 0, 0, 0, 1, 1], obs["pred_uncertainty"]))
    all_known = ct.metrics.label_transfer_scores(ad, "true", "pred")
    assert "unknown_auroc" not in all_known and all_known["accuracy"] == pytest.approx(2 / 6)


def test_bad_inputs():
    with pytest.raises(ValueError, match="differ in length"):
        ct.metrics.accuracy(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="missing values"):
        ct.metrics.accuracy(["a", None], ["a", "b"])
    with pytest.raises(ValueError, match="No cells"):
        ct.metrics.macro_f1([], [])
    with pytest.raises(ValueError, match="both unknown and known"):
        ct.metrics.unknown_detection_auroc([True, True], [0.1, 0.2])
    with pytest.raises(ValueError, match="NaN"):
        ct.metrics.unknown_detection_auroc([True, False], [np.nan, 0.2])
    ad = AnnData(X=np.zeros((2, 1)), obs=pd.DataFrame({"t": ["a", "b"]}, index=["x", "y"]))
    with pytest.raises(KeyError, match="no column 'p'"):
        ct.metrics.label_transfer_scores(ad, "t", "p")


def test_scib_scores_of_a_good_and_a_bad_embedding():
    pytest.importorskip("scib_metrics")
    rng = np.random.default_rng(0)
    n = 300
    labels = np.repeat(["A", "B", "C"], n // 3)
    batch = np.tile(["b0", "b1"], n // 2)
    centres = {"A": [0, 0], "B": [5, 0], "C": [0, 5]}
    good = np.array([centres[lab] for lab in labels]) + rng.normal(0, 0.5, size=(n, 2))
    shift = np.where(batch == "b1", 8.0, 0.0)[:, None]
    bad = good + np.c_[shift, shift]  # batches kept apart
    sim = ct.datasets.simulate_scatac(n, 200, random_state=0)
    ad = AnnData(X=sim.X, obs=pd.DataFrame({"batch": batch, "cell_type": labels}, index=sim.obs_names))
    ad.obsm["good"] = np.c_[good, rng.normal(0, 0.1, size=(n, 2))]
    ad.obsm["bad"] = np.c_[bad, rng.normal(0, 0.1, size=(n, 2))]
    res = ct.metrics.scib_scores(ad, "batch", "cell_type", ["good", "bad"], fast=True)
    assert list(res.index) == ["good", "bad"]
    assert {"Batch correction", "Bio conservation", "Total"} <= set(res.columns)
    assert res.loc["good", "Batch correction"] > res.loc["bad", "Batch correction"]
    assert res.loc["good", "Total"] > res.loc["bad", "Total"]


def _scores_before_sklearn(t, p, y, u):
    """accuracy, per-class precision/recall/F1, macro-F1 and AUROC as chromtools computed them before scikit-learn."""
    from scipy.stats import rankdata

    rows = []
    for c in np.unique(t):
        is_t, is_p = t == c, p == c
        tp = int(np.sum(is_t & is_p))
        precision = tp / is_p.sum() if is_p.sum() else 0.0
        recall = tp / is_t.sum()
        f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
        rows.append((precision, recall, f1))
    ranks = rankdata(u)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    auroc = (ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return float(np.mean(t == p)), np.array(rows), float(np.mean([r[2] for r in rows])), float(auroc)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sklearn_scores_equal_the_old_ones(seed):
    rng = np.random.default_rng(seed)
    t = rng.choice(["B", "T", "NK", "Mono", "DC"], 500, p=[0.3, 0.3, 0.2, 0.15, 0.05])
    p = np.where(rng.random(500) < 0.7, t, rng.choice(["B", "T", "NK", "Mono", "Unknown"], 500))
    y = rng.random(500) < 0.2
    u = np.round(rng.random(500) + 0.3 * y, 2)  # rounded: ties count half
    acc, per_class, f1, auroc = _scores_before_sklearn(t, p, y, u)
    assert ct.metrics.accuracy(t, p) == acc
    report = ct.metrics.classification_report(t, p).sort_index()
    np.testing.assert_allclose(report[["precision", "recall", "f1"]].to_numpy(), per_class, rtol=1e-12, atol=0)
    assert ct.metrics.macro_f1(t, p) == pytest.approx(f1, rel=1e-12, abs=0)
    assert ct.metrics.unknown_detection_auroc(y, u) == pytest.approx(auroc, rel=1e-12, abs=0)
