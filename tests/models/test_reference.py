from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scvi.distributions import NegativeBinomial

import chromtools as ct
from chromtools.models._input_checks import compute_idf
from chromtools.models._mmd import _mmd_between_groups
from chromtools.models._peak_vae import PeakVAEModule
from chromtools.models._saved_models import MODEL_FORMAT_VERSION

SMALL = {"n_hidden": 32, "n_latent": 6}


@pytest.fixture(scope="module")
def sim():
    return ct.datasets.simulate_scatac(600, 300, n_cell_types=4, n_batches=2, random_state=3)


@pytest.fixture(scope="module")
def trained(sim):
    adata = sim.copy()
    ct.models.PeakSCANVI.setup_anndata(adata, batch_key="batch", labels_key="cell_type")
    model = ct.models.PeakSCANVI(adata, **SMALL).train(max_epochs=40, random_state=0)
    return adata, model


# ----------------------------------------------------------------------------------------------
# module maths
# ----------------------------------------------------------------------------------------------
def test_mmd_is_zero_for_identical_groups_and_grows_with_a_shift():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(40, 3, generator=g)
    same = torch.cat([z, z])
    groups = torch.cat([torch.zeros(40), torch.ones(40)])
    assert float(_mmd_between_groups(same, groups)) == pytest.approx(0.0, abs=1e-5)
    assert float(_mmd_between_groups(z, torch.zeros(40))) == 0.0  # one group: nothing to compare
    shifts = [float(_mmd_between_groups(torch.cat([z, z + s]), groups)) for s in (0.5, 1.0, 3.0)]
    assert 0 < shifts[0] < shifts[1] < shifts[2]
    # three groups: the sum over the three pairs
    three = torch.cat([z, z + 1.0, z + 2.0])
    g3 = torch.cat([torch.zeros(40), torch.ones(40), torch.full((40,), 2.0)])
    pair = lambda a, b: float(_mmd_between_groups(torch.cat([a, b]), groups))
    expected = pair(z, z + 1.0) + pair(z, z + 2.0) + pair(z + 1.0, z + 2.0)
    assert float(_mmd_between_groups(three, g3)) == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("likelihood", ["bernoulli", "poisson", "nb"])
def test_negative_log_likelihood_matches_torch_distributions(likelihood):
    torch.manual_seed(0)
    module = PeakVAEModule(50, n_batch=2, likelihood=likelihood, n_hidden=8, n_latent=3)
    x = torch.poisson(torch.full((5, 50), 0.3))
    log_rate = torch.log_softmax(torch.randn(5, 50), -1) + torch.log(torch.full((5, 1), 20.0))
    batch = torch.tensor([[0], [1], [0], [1], [1]])
    if likelihood == "nb":
        with torch.no_grad():
            module.px_log_theta.copy_(torch.randn(50, 2))
    ours = module._nll(x, log_rate, batch)
    rate = log_rate.exp()
    if likelihood == "bernoulli":
        ref = -torch.distributions.Bernoulli(probs=1 - torch.exp(-rate)).log_prob((x > 0).float()).sum(-1)
    elif likelihood == "poisson":
        ref = -torch.distributions.Poisson(rate).log_prob(x).sum(-1)
    else:
        theta = torch.exp(module.px_log_theta[:, batch.view(-1)].T)
        ref = -NegativeBinomial(mu=rate, theta=theta).log_prob(x).sum(-1)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("likelihood", ["bernoulli", "poisson", "nb"])
def test_sparse_likelihood_and_encoder_input_equal_the_dense_ones(likelihood):
    torch.manual_seed(0)
    module = PeakVAEModule(60, n_batch=2, likelihood=likelihood, n_hidden=8, n_latent=3)
    x = torch.poisson(torch.full((7, 60), 0.2))
    batch = torch.tensor([[0], [1], [0], [1], [1], [0], [0]])
    inf = module.inference(x, batch)
    gen = module.generative(inf["z"], inf["library"], batch)
    log_rate = torch.log_softmax(gen["logits"], -1) + torch.log(inf["library"])
    dense = module._nll(x, log_rate, batch)
    sparse = module._nll_sparse(x, gen["logits"], inf["library"], batch, inf["nonzero"])
    torch.testing.assert_close(sparse, dense, rtol=1e-4, atol=1e-3)
    rows, cols, vals = inf["nonzero"]
    n_open = (x > 0).sum(-1).float()
    for transform in ("tfidf", "log1p", "binary"):
        module.input_transform = transform
        got = module._sparse_encoder_input(rows, cols, vals, n_open, x.shape).to_dense()
        torch.testing.assert_close(got, module._encoder_input(x))


def test_tfidf_encoder_input_matches_pp_tfidf():
    X = np.random.default_rng(0).poisson(0.2, size=(30, 40)).astype(np.float32)
    X[0] = 0  # an empty cell must not divide by zero
    idf = compute_idf(X)
    module = PeakVAEModule(40, idf=idf, n_hidden=8, n_latent=2)
    ours = module._encoder_input(torch.as_tensor(X)).numpy()
    expected, idf2 = ct.pp.tfidf_matrix(X, idf)
    np.testing.assert_allclose(ours, expected.toarray(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(idf, idf2)


def test_label_prior_kl_is_the_gaussian_kl_to_the_label_component():
    torch.manual_seed(1)
    module = PeakVAEModule(20, n_labels=3, label_prior=True, classification_weight=1.0, n_hidden=8, n_latent=4)
    qm, qv = torch.randn(6, 4), torch.rand(6, 4) + 0.1
    labels = torch.tensor([[0], [1], [2], [0], [3], [3]])  # 3 = unlabelled
    kl = module._kl(qm, qv, labels)
    q = torch.distributions.Normal(qm, qv.sqrt())
    for i in range(4):
        p = torch.distributions.Normal(module.prior_means[labels[i, 0]], torch.ones(4))
        assert float(kl[i]) == pytest.approx(float(torch.distributions.kl_divergence(q, p)[i].sum()), rel=1e-5)
    # unlabelled: classifier-weighted mixture + KL of the classifier to the uniform label prior
    probs = torch.softmax(module.classifier(qm), -1)
    per = torch.stack(
        [
            torch.distributions.kl_divergence(q, torch.distributions.Normal(module.prior_means[y], 1.0)).sum(-1)
            for y in range(3)
        ],
        1,
    )
    expected = (probs * per).sum(-1) + (probs * torch.log(probs * 3)).sum(-1)
    torch.testing.assert_close(kl[4:], expected[4:], rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------------------------
# models
# ----------------------------------------------------------------------------------------------
def test_peakscanvi_trains_and_organises_the_latent_by_label(trained):
    adata, model = trained
    hist = model.history
    assert "accuracy_validation" in hist and "validation_loss" in hist
    assert float(hist["elbo_train"].iloc[-1, 0]) < float(hist["elbo_train"].iloc[0, 0])
    z = model.get_latent_representation()
    assert z.shape == (adata.n_obs, 6) and np.isfinite(z).all()
    pred = model.predict()
    assert (pred.to_numpy() == adata.obs["cell_type"].astype(str).to_numpy()).mean() > 0.9
    soft = model.predict(soft=True)
    np.testing.assert_allclose(soft.sum(1), 1.0, rtol=1e-5)
    assert list(soft.columns) == sorted(adata.obs["cell_type"].astype(str).unique())


@pytest.mark.parametrize("likelihood", ["poisson", "nb"])
def test_peaktrvae_trains_with_count_likelihoods(sim, likelihood):
    adata = sim.copy()
    ct.models.PeakTRVAE.setup_anndata(adata, batch_key="batch")
    model = ct.models.PeakTRVAE(adata, likelihood=likelihood, input_transform="log1p", **SMALL)
    model.train(max_epochs=3, random_state=0)
    assert "mmd_train" in model.history
    loss = model.history["elbo_train"].astype(float).iloc[:, 0]
    assert np.isfinite(loss).all() and loss.iloc[-1] < loss.iloc[0]


def test_training_is_deterministic_for_a_seed(sim, tmp_path):
    states = []
    for seed in (0, 0, 1):
        adata = sim.copy()
        ct.tl.train_reference(
            adata, "batch", model="peaktrvae", max_epochs=2, model_kwargs=SMALL, random_state=seed, model_dir=tmp_path
        )
        states.append(ct.tl.load_model(tmp_path).module.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert not all(torch.equal(states[0][k], states[2][k]) for k in states[0])


def test_setup_rejects_bad_inputs(sim):
    adata = sim.copy()
    adata.obs["with_nan"] = adata.obs["cell_type"].astype(object)
    adata.obs.iloc[:5, adata.obs.columns.get_loc("with_nan")] = np.nan
    with pytest.raises(ValueError, match="missing values.*unlabeled_category"):
        ct.models.PeakSCANVI.setup_anndata(adata, batch_key="batch", labels_key="with_nan")
    with pytest.raises(ValueError, match="pass labels_key"):
        ct.models.PeakSCANVI.setup_anndata(adata, batch_key="batch")
    with pytest.raises(KeyError, match="no batch column 'donor'"):
        ct.models.PeakTRVAE.setup_anndata(adata, batch_key="donor")
    logged = adata.copy()
    logged.X = np.log1p(logged.X.toarray())
    with pytest.raises(ValueError, match="non-integer values.*raw peak counts"):
        ct.models.PeakTRVAE.setup_anndata(logged, batch_key="batch")
    negative = adata.copy()
    negative.X = negative.X.toarray() - 1.0
    with pytest.raises(ValueError, match="negative values"):
        ct.models.PeakTRVAE.setup_anndata(negative)
    one = adata.copy()
    one.obs["one"] = "B"
    ct.models.PeakSCANVI.setup_anndata(one, labels_key="one")
    with pytest.raises(ValueError, match="at least two labelled cell types"):
        ct.models.PeakSCANVI(one)
    with pytest.raises(ValueError, match="likelihood must be one of"):
        PeakVAEModule(10, likelihood="gaussian")


def test_unlabelled_cells_are_used_without_their_label(sim):
    adata = sim.copy()
    labels = adata.obs["cell_type"].astype(str).to_numpy().copy()
    labels[::3] = "Unknown"
    adata.obs["partial"] = labels
    ct.models.PeakSCANVI.setup_anndata(adata, batch_key="batch", labels_key="partial")
    model = ct.models.PeakSCANVI(adata, **SMALL)
    assert sorted(model.labels_) == sorted(set(labels) - {"Unknown"})
    model.train(max_epochs=3)
    assert model.predict().isin(model.labels_).all()


def test_save_load_roundtrip_keeps_weights_and_reference_store(trained, tmp_path):
    adata, model = trained
    model.store_reference()
    model.save(tmp_path / "ref", overwrite=True)
    loaded = ct.models.PeakSCANVI.load(tmp_path / "ref")
    for k, v in model.module.state_dict().items():
        assert torch.equal(v, loaded.module.state_dict()[k]), k
    np.testing.assert_array_equal(loaded.reference_["latent"], model.reference_["latent"])
    pd.testing.assert_frame_equal(loaded.reference_["obs"], model.reference_["obs"])
    assert list(loaded.labels_) == list(model.labels_)
    assert loaded.chromtools_format_ == MODEL_FORMAT_VERSION
    with_data = ct.models.PeakSCANVI.load(tmp_path / "ref", adata=adata)
    np.testing.assert_allclose(with_data.get_latent_representation(), model.get_latent_representation(), atol=1e-6)


def test_load_refuses_an_incompatible_version(trained, tmp_path):
    _, model = trained
    path = tmp_path / "old"
    model.save(path, overwrite=True)
    saved = torch.load(path / "model.pt", weights_only=False)
    saved["attr_dict"]["chromtools_format_"] = 0
    saved["attr_dict"]["chromtools_version_"] = "0.0.1"
    torch.save(saved, path / "model.pt")
    with pytest.raises(ValueError, match=r"saved by chromtools 0\.0\.1 \(model format 0\).*Retrain"):
        ct.models.PeakSCANVI.load(path)
    with pytest.raises(ValueError, match="model format 0"):
        ct.models.check_saved_reference(path)
    with pytest.raises(ValueError, match="is a PeakSCANVI, not a PeakTRVAE"):
        ct.models.check_saved_reference(path, model_name="PeakTRVAE")
    with pytest.raises(FileNotFoundError, match="holds no saved model"):
        ct.models.check_saved_reference(tmp_path / "nothing")


def test_mmd_penalty_mixes_batches(tmp_path):
    from sklearn.neighbors import NearestNeighbors

    a = ct.datasets.simulate_scatac(800, 400, n_cell_types=3, n_batches=2, batch_effect=1.5, random_state=0)
    batch = a.obs["batch"].cat.codes.to_numpy()
    mixing = {}
    for weight in (0.0, 10.0):
        b = a.copy()
        model_kwargs = {**SMALL, "mmd_weight": weight}
        ct.tl.train_reference(
            b, "batch", model="peaktrvae", max_epochs=40, model_kwargs=model_kwargs, model_dir=tmp_path
        )
        z = b.obsm["X_reference"]
        idx = NearestNeighbors(n_neighbors=16).fit(z).kneighbors(z, return_distance=False)[:, 1:]
        mixing[weight] = (batch[idx] != batch[:, None]).mean()  # 0.5 = perfectly mixed
    assert mixing[0.0] < 0.1 < 0.3 < mixing[10.0]


def test_input_dropout_only_in_training_mode():
    torch.manual_seed(0)
    module = PeakVAEModule(100, input_dropout=0.5, n_hidden=8, n_latent=2)
    x = torch.poisson(torch.full((4, 100), 0.5))
    batch = torch.zeros(4, 1)
    module.train()
    a, b = module.inference(x, batch)["qzm"], module.inference(x, batch)["qzm"]
    assert not torch.allclose(a, b)
    module.eval()
    torch.testing.assert_close(module.inference(x, batch)["qzm"], module.inference(x, batch)["qzm"])
    with pytest.raises(ValueError, match="input_dropout must be in"):
        PeakVAEModule(10, input_dropout=1.0)


def test_early_stopping_stops_and_keeps_the_best_validation_epoch(sim):
    adata = sim.copy()
    ct.models.PeakSCANVI.setup_anndata(adata, batch_key="batch", labels_key="cell_type")
    model = ct.models.PeakSCANVI(adata, **SMALL, classification_weight=200.0)
    model.train(max_epochs=200, early_stopping_patience=3, lr=1e-2)
    val = model.history["validation_loss"].astype(float).iloc[:, 0].to_numpy()
    assert len(val) < 200  # stopped early
    assert int(np.argmin(val)) == len(val) - 1 - 3  # the best epoch is `patience` epochs before the end
