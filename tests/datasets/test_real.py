from __future__ import annotations

import numpy as np
import pytest

import chromtools as ct


def test_missing_data_dir_is_explained(tmp_path, monkeypatch):
    monkeypatch.delenv("CHROMTOOLS_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match="pass data_dir="):
        ct.datasets.granja2019()
    with pytest.raises(FileNotFoundError, match="holds 'atac_hsc_bulk/'"):
        ct.datasets.hsc_bulk(tmp_path)


def test_env_var(shared_data, monkeypatch):
    monkeypatch.setenv("CHROMTOOLS_DATA", str(shared_data))
    assert ct.datasets.hsc_bulk().noisy.exists()


def test_scatac_sets(shared_data):
    g = ct.datasets.granja2019(shared_data)
    assert g.shape == (14_125, 10_000)
    assert g.obs["batch"].value_counts().to_dict() == {"BMMC_D6T1": 10_335, "BMMC_D5T1": 3_790}
    assert (g.var["end"] - g.var["start"] == 501).all()  # 0-based half-open after conversion
    s = ct.datasets.snareseq2019(shared_data)
    assert s.obs["batch"].nunique() == 12


def test_multiome_sets(shared_data):
    m = ct.datasets.bmmc_multiome(shared_data)
    assert set(m.mod) == {"rna", "atac"} and m.n_obs == 500
    assert m.obs["batch"].value_counts().to_dict() == {"s1d2": 279, "s1d1": 221}
    assert m.mod["atac"].layers["counts"].max() > 1
    p = ct.datasets.pbmc_multiome(shared_data)
    assert ct.io.fragments_path(p).exists()


def test_timecourse_sets(shared_data):
    h = ct.datasets.hsmm_sciatac(shared_data)
    assert h.shape == (200, 6_146)
    assert h.obs.groupby("time_point", observed=True).size().to_dict() == {"T0": 51, "T1": 47, "T2": 55, "T3": 47}
    assert sorted(h.obs["time"].unique()) == [0, 24, 48, 72]
    ann = ct.datasets.hsmm_gene_annotation(shared_data)
    assert ann["symbol"].nunique() == 904 and (ann["end"] > ann["start"]).all()
    k = ct.datasets.kouno2013_thp1(shared_data)
    assert k.shape == (960, 45) and sorted(k.obs["time"].unique()) == [0, 1, 6, 12, 24, 48, 72, 96]
    y = ct.datasets.cho1998_yeast(shared_data)
    assert y.shape == (17, 384) and y.var["phase_class"].nunique() == 5
    assert np.allclose(y.X.mean(axis=0), 0, atol=1e-3)
    yu = ct.datasets.cho1998_yeast(shared_data, labelled=False)
    assert yu.shape == (17, 2_951) and yu.obs["time"].iloc[-1] == 160
