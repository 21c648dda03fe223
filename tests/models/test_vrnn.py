"""The VRNN's maths: the documented recurrence, GRU-D decay with the gap, smoothing posterior, masking, KL."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import chromtools as ct
from chromtools.models._vrnn_module import DT_KEY, MASK_KEY, NOISE_KEY, VRNNModule, gaussian_kl

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


def test_decoder_cannot_see_x_given_the_latents():
    torch.manual_seed(0)
    module = VRNNModule().eval()
    x, dt, noise = _inputs()
    z = torch.randn(x.shape[0], x.shape[1], module.n_latent)
    x2 = x.clone()
    x2[:, 3] += 5.0  # a large change of x_3 only
    with torch.no_grad():
        a = module.inference(x, dt, noise, z=z)
        b = module.inference(x2, dt, noise, z=z)
        pa = module.generative(a["z"], a["h_prev"])["px_m"]
        pb = module.generative(b["z"], b["h_prev"])["px_m"]
    # x enters neither the recurrence nor the decoder: given the latents the generative model ignores it ...
    assert torch.equal(a["h_prev"], b["h_prev"]) and torch.equal(pa, pb)
    # ... while the (smoothing) posterior reads x_3 at t = 3 and at every earlier time point.
    for t in range(4):
        assert not torch.allclose(a["qz_m"][:, t], b["qz_m"][:, t])


def test_documented_recurrence_step_by_step():
    """h̃_{t-1} = exp(-softplus(ρ) Δt_t) h_{t-1}; prior(h̃); q([h̃, b_t]); h_t = GRU(φ_z(z_t), h̃_{t-1})."""
    torch.manual_seed(4)
    module = VRNNModule().eval()
    x, dt, noise = _inputs()
    z = torch.randn(x.shape[0], x.shape[1], module.n_latent)
    with torch.no_grad():
        out = module.inference(x, dt, noise, z=z)
        b = module.smoothing_states(x, dt, torch.ones_like(x), noise)
        h = module.h0.expand(x.shape[0], -1)
        for t in range(x.shape[1]):
            h = torch.exp(-torch.nn.functional.softplus(module.decay_raw) * dt[:, t : t + 1]) * h
            assert torch.allclose(out["h_prev"][:, t], h, atol=1e-6)
            m_p, v_p = module._split(module.prior(h))
            assert torch.allclose(out["pz_m"][:, t], m_p, atol=1e-6) and torch.allclose(out["pz_v"][:, t], v_p)
            m_q, _ = module._split(module.encoder(torch.cat([h, b[:, t]], -1)))
            assert torch.allclose(out["qz_m"][:, t], m_q, atol=1e-6)
            h = module.rnn(module.phi_z(z[:, t]), h)
        # backward pass: b_t from b_{t+1} decayed by the gap Δt_{t+1}
        t = 2
        inp = torch.cat(
            [module.phi_x(x[:, t : t + 1]), torch.ones_like(x[:, :1]), torch.log(noise[:, t : t + 1] + 1e-3)], -1
        )
        decay_b = torch.exp(-torch.nn.functional.softplus(module.decay_raw_b) * dt[:, t + 1 : t + 2])
        assert torch.allclose(b[:, t], module.backward_rnn(inp, decay_b * b[:, t + 1]), atol=1e-6)


def test_gap_change_changes_the_transition():
    torch.manual_seed(2)
    module = VRNNModule().eval()
    x, dt, noise = _inputs()
    z = torch.randn(x.shape[0], x.shape[1], module.n_latent)
    longer = dt.clone()
    longer[:, 4] *= 3.0  # only the gap before time point 4
    with torch.no_grad():
        a = module.inference(x, dt, noise, z=z)
        b = module.inference(x, longer, noise, z=z)
    # the prior (transition) before the gap is unchanged, at the gap it changes, and the state fades more
    assert torch.equal(a["pz_m"][:, :4], b["pz_m"][:, :4])
    assert not torch.allclose(a["pz_m"][:, 4], b["pz_m"][:, 4])
    assert torch.all(b["h_prev"][:, 4].abs() <= a["h_prev"][:, 4].abs() + 1e-7)
    assert b["h_prev"][:, 4].abs().sum() < a["h_prev"][:, 4].abs().sum()
    # a very long gap forgets the past: the transition no longer depends on the earlier latents
    far = dt.clone()
    far[:, 4] = 1e4
    z2 = z.clone()
    z2[:, :4] += 3.0
    with torch.no_grad():
        c = module.inference(x, far, noise, z=z)
        d = module.inference(x, far, noise, z=z2)
    assert torch.allclose(c["pz_m"][:, 4], d["pz_m"][:, 4], atol=1e-6)
    # use_dt=False: gaps are ignored
    blind = VRNNModule(use_dt=False).eval()
    with torch.no_grad():
        e = blind.inference(x, dt, noise, use_mean=True)
        f = blind.inference(x, longer, noise, use_mean=True)
    assert torch.equal(e["qz_m"], f["qz_m"]) and torch.equal(e["pz_m"], f["pz_m"])


def test_missing_points_are_masked_not_imputed():
    torch.manual_seed(5)
    module = VRNNModule().eval()
    x, dt, noise = _inputs()
    mask = torch.ones_like(x)
    mask[:, [2, 5]] = 0.0
    x2 = x.clone()
    x2[:, [2, 5]] = 100.0  # whatever sits at a missing point is never read
    with torch.no_grad():
        a = module.inference(x, dt, noise, mask, use_mean=True)
        b = module.inference(x2, dt, noise, mask, use_mean=True)
        gen = module.generative(a["z"], a["h_prev"])
        la = module.loss({"X": x, DT_KEY: dt, NOISE_KEY: noise, MASK_KEY: mask}, a, gen)
        lb = module.loss({"X": x2, DT_KEY: dt, NOISE_KEY: noise, MASK_KEY: mask}, b, gen)
        full = module.loss({"X": x, DT_KEY: dt, NOISE_KEY: noise, MASK_KEY: torch.ones_like(x)}, a, gen)
    assert torch.equal(a["qz_m"], b["qz_m"])
    assert torch.allclose(la.loss, lb.loss)
    # the reconstruction term is the sum over measured points only
    var = gen["px_v"] + noise
    nll = 0.5 * (np.log(2 * np.pi) + torch.log(var) + (x - gen["px_m"]) ** 2 / var)
    rec = la.reconstruction_loss["reconstruction_loss"]
    assert torch.allclose(rec, (nll * mask).sum(-1), atol=1e-5)
    assert torch.allclose(full.reconstruction_loss["reconstruction_loss"], nll.sum(-1), atol=1e-5)


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
    tensors = {"X": x, DT_KEY: dt, NOISE_KEY: noise, MASK_KEY: torch.ones_like(x)}
    inf = module.inference(x, dt, noise)
    gen = module.generative(inf["z"], inf["h_prev"])
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
    broken = summary.copy()
    del broken.layers["observed"]
    with pytest.raises(KeyError, match="observed"):
        ct.models.VRNN.setup_anndata(broken)
    ct.models.VRNN.setup_anndata(summary)
    with pytest.raises(ValueError, match="kl_warmup"):
        ct.models.VRNN(summary).train(max_epochs=1, kl_warmup=2.0)


def test_posterior_samples_spread_around_the_means(summary):
    model = _trained(summary, max_epochs=25)
    samples = model.get_latent_samples(n_samples=20, random_state=1)
    means = model.get_latent_representation()
    assert samples.shape == (20, *means.shape)
    assert np.array_equal(samples, model.get_latent_samples(n_samples=20, random_state=1))
    assert samples.std(0).mean() > 1e-3
    assert np.corrcoef(samples.mean(0).ravel(), means.ravel())[0, 1] > 0.5
