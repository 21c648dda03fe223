"""The VRNN's maths: a decoder blind to x_t, the time gap as an input, an active and annealed KL term."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import chromtools as ct
from chromtools.models._vrnn_module import DT_KEY, NOISE_KEY, VRNNModule, gaussian_kl

torch.set_num_threads(1)


def _inputs(n=6, T=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, T, generator=g)
    dt = torch.tensor([0.0, 1.0, 2.0, 3.0, 6.0, 12.0, 24.0][:T]).expand(n, T).clone()
    noise = torch.rand(n, T, generator=g) * 0.2
    return x, dt, noise


@pytest.fixture(scope="module")
def summary():
    adata = ct.datasets.simulate_timecourse(120, cells_per_time=30, random_state=3)
    return ct.pp.timecourse_summary(adata, "time", layer="counts")


def _trained(summary, seed=0, max_epochs=25, **kw):
    ct.models.VRNN.setup_anndata(summary)
    model = ct.models.VRNN(summary, random_state=seed, **kw)
    model.train(max_epochs=max_epochs, accelerator="cpu", devices=1, progress=False, random_state=seed)
    return model


@pytest.mark.parametrize("recurrence", ["z", "xz"])
def test_decoder_cannot_see_x_t(recurrence):
    torch.manual_seed(0)
    module = VRNNModule(recurrence=recurrence).eval()
    x, dt, noise = _inputs()
    z = torch.randn(x.shape[0], x.shape[1], module.n_latent)
    t = 3
    x2 = x.clone()
    x2[:, t] += 5.0  # a large change of x_t only
    with torch.no_grad():
        a = module.inference(x, dt, noise, z=z)
        b = module.inference(x2, dt, noise, z=z)
        pa = module.generative(a["z"], a["h_prev"], dt)["px_m"]
        pb = module.generative(b["z"], b["h_prev"], dt)["px_m"]
    # Given z_t and h_{t-1}, p(x_t | .) is unchanged: the decoder at t (and before) never reads x_t ...
    assert torch.equal(a["h_prev"][:, : t + 1], b["h_prev"][:, : t + 1])
    assert torch.equal(pa[:, : t + 1], pb[:, : t + 1])
    # ... while the encoder does read it (the test can see a dependence when there is one).
    assert not torch.allclose(a["qz_m"][:, t], b["qz_m"][:, t])
    if recurrence == "xz":  # x_t enters h_t, so later decoders (t+1, ...) may depend on it
        assert not torch.allclose(pa[:, t + 1], pb[:, t + 1])
    else:  # latent-only recurrence: x reaches the decoder only through z
        assert torch.equal(pa, pb)


def test_decoder_gradient_wrt_x_t_is_zero_given_z():
    torch.manual_seed(1)
    module = VRNNModule(recurrence="xz")
    x, dt, noise = _inputs()
    x.requires_grad_(True)
    z = torch.randn(x.shape[0], x.shape[1], module.n_latent)
    out = module.inference(x, dt, noise, z=z)
    px = module.generative(out["z"], out["h_prev"], dt)["px_m"]
    for t in range(x.shape[1]):
        (grad,) = torch.autograd.grad(px[:, t].sum(), x, retain_graph=True)
        assert torch.all(grad[:, t:] == 0), f"decoder at t={t} depends on x_t or later"
        if t > 0:
            assert grad[:, :t].abs().sum() > 0  # but on the past, through h_{t-1}


def test_time_gap_changes_the_result():
    torch.manual_seed(2)
    module = VRNNModule().eval()
    x, dt, noise = _inputs()
    even = torch.arange(x.shape[1], dtype=torch.float32).clamp(max=1).expand_as(x).clone()
    with torch.no_grad():
        a = module.inference(x, dt, noise, use_mean=True)
        b = module.inference(x, even, noise, use_mean=True)
        pa = module.generative(a["z"], a["h_prev"], dt)["px_m"]
        pb = module.generative(b["z"], b["h_prev"], even)["px_m"]
    assert not torch.allclose(a["qz_m"], b["qz_m"])
    assert not torch.allclose(a["pz_m"], b["pz_m"])
    assert not torch.allclose(pa, pb)
    blind = VRNNModule(use_dt=False).eval()
    with torch.no_grad():
        c = blind.inference(x, dt, noise, use_mean=True)
        d = blind.inference(x, even, noise, use_mean=True)
    assert torch.equal(c["qz_m"], d["qz_m"])


def test_time_gap_changes_trained_features(summary):
    uneven = _trained(summary, max_epochs=10).get_latent_representation()
    even = summary.copy()
    even.layers["dt"] = np.broadcast_to(np.r_[0.0, np.ones(even.n_vars - 1)], even.shape).astype(np.float32).copy()
    assert not np.allclose(uneven, _trained(even, max_epochs=10).get_latent_representation())


def test_kl_formula_matches_torch():
    g = torch.Generator().manual_seed(0)
    m_q, m_p = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    v_q, v_p = torch.rand(5, 3, generator=g) + 0.1, torch.rand(5, 3, generator=g) + 0.1
    ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(m_q, v_q.sqrt()), torch.distributions.Normal(m_p, v_p.sqrt())
    )
    assert torch.allclose(gaussian_kl(m_q, v_q, m_p, v_p), ref, atol=1e-6)


def test_loss_uses_kl_weight_and_noise():
    torch.manual_seed(3)
    module = VRNNModule()
    x, dt, noise = _inputs()
    tensors = {"X": x, DT_KEY: dt, NOISE_KEY: noise}
    inf = module.inference(x, dt, noise)
    gen = module.generative(inf["z"], inf["h_prev"], dt)
    l0 = module.loss(tensors, inf, gen, kl_weight=0.0)
    l1 = module.loss(tensors, inf, gen, kl_weight=1.0)
    kl = l1.kl_local["kl_local"]
    assert torch.all(kl > 0)
    assert torch.isclose(l1.loss - l0.loss, kl.mean(), atol=1e-5)
    # A time point measured with a larger standard error weighs less in the reconstruction.
    noisy = {**tensors, NOISE_KEY: noise + 10.0}
    rec = module.loss(tensors, inf, gen).reconstruction_loss["reconstruction_loss"]
    rec_noisy = module.loss(noisy, inf, gen).reconstruction_loss["reconstruction_loss"]
    off = {**tensors, "X": x + 3.0}
    off_noisy = {**noisy, "X": x + 3.0}
    gap = module.loss(off, inf, gen).reconstruction_loss["reconstruction_loss"] - rec
    gap_noisy = module.loss(off_noisy, inf, gen).reconstruction_loss["reconstruction_loss"] - rec_noisy
    assert torch.all(gap_noisy < gap / 10)


def test_training_anneals_kl_and_keeps_it_active(summary):
    model = _trained(summary, max_epochs=30)
    hist = model.history
    klw = np.asarray(hist["kl_weight"].astype(float)).ravel()
    assert klw.size == 30
    assert klw[0] == pytest.approx(0.0)
    assert klw[-1] == pytest.approx(1.0)
    assert np.all(np.diff(klw) >= -1e-9)
    kl_epochs = np.asarray(hist["kl_local_train"].astype(float)).ravel()
    assert kl_epochs[-1] > 0.5  # nats per gene: the latent carries information
    terms = model.get_elbo_terms()
    assert terms["kl"].shape == (summary.n_obs,)
    assert np.median(terms["kl"]) > 0.5
    elbo = np.asarray(hist["elbo_train"].astype(float)).ravel()
    assert elbo[-1] < elbo[0]


def test_features_are_posterior_means_and_deterministic(summary):
    a = _trained(summary, seed=5, max_epochs=8)
    b = _trained(summary, seed=5, max_epochs=8)
    c = _trained(summary, seed=6, max_epochs=8)
    za, zb, zc = (m.get_latent_representation() for m in (a, b, c))
    T = summary.n_vars
    assert za.shape == (summary.n_obs, T * a.module.n_latent)
    assert a.get_latent_representation(flatten=False).shape == (summary.n_obs, T, a.module.n_latent)
    assert np.array_equal(za, zb)
    assert not np.allclose(za, zc)
    # posterior means, not samples: asking twice gives the same answer
    assert np.array_equal(za, a.get_latent_representation())
    recon = a.get_reconstruction()
    assert recon.shape == summary.shape and np.isfinite(recon).all()


def test_second_train_call_trains_in_train_mode(summary):
    model = _trained(summary, max_epochs=3)
    before = model.get_latent_representation()
    model.train(max_epochs=3, accelerator="cpu", progress=False, random_state=1)
    assert not np.array_equal(before, model.get_latent_representation())


def test_save_and_load_roundtrip(summary, tmp_path):
    model = _trained(summary, max_epochs=3)
    model.save(tmp_path / "vrnn", save_anndata=False)
    loaded = ct.models.VRNN.load(str(tmp_path / "vrnn"), adata=summary, accelerator="cpu")
    assert np.allclose(model.get_latent_representation(), loaded.get_latent_representation())


def test_bad_model_inputs(summary):
    one = summary[:, :1].copy()
    ct.models.VRNN.setup_anndata(one)
    with pytest.raises(ValueError, match="at least two time points"):
        ct.models.VRNN(one)
    broken = summary.copy()
    del broken.layers["noise"]
    with pytest.raises(KeyError, match="noise"):
        ct.models.VRNN.setup_anndata(broken)
    with pytest.raises(ValueError, match="recurrence"):
        VRNNModule(recurrence="x")
    ct.models.VRNN.setup_anndata(summary)
    with pytest.raises(ValueError, match="kl_warmup"):
        ct.models.VRNN(summary).train(max_epochs=1, kl_warmup=2.0)
