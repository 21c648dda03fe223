"""Training with Lightning's DDP strategy on CPU (2 processes over gloo), and the in-memory best-weights callback."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest
import torch

from chromtools.models._distributed import BestWeights, is_distributed


@pytest.mark.parametrize(
    ("mode", "scores", "best"), [("min", [3.0, 1.0, 2.0, 1.5], 1), ("max", [0.1, 0.5, 0.7, 0.2], 2)]
)
def test_best_weights_restores_the_best_epoch(mode, scores, best):
    module = torch.nn.Linear(2, 1)
    pl_module = SimpleNamespace(module=module)
    cb = BestWeights("metric", mode=mode)
    snapshots = []
    for epoch, value in enumerate([*scores, float("nan")]):
        with torch.no_grad():
            module.weight.fill_(float(epoch))
        snapshots.append(module.weight.detach().clone())
        trainer = SimpleNamespace(
            sanity_checking=False, current_epoch=epoch, callback_metrics={"metric": torch.tensor(value)}
        )
        cb.on_validation_end(trainer, pl_module)
    cb.on_train_end(trainer, pl_module)
    assert cb.best_epoch == best and cb.best_score == pytest.approx(scores[best])
    assert torch.equal(module.weight, snapshots[best])
    with pytest.raises(ValueError, match="'min' or 'max'"):
        BestWeights("metric", mode="up")


def test_is_distributed():
    from lightning.pytorch.strategies import DDPStrategy

    assert is_distributed("ddp") and is_distributed("ddp_spawn") and is_distributed(DDPStrategy())
    assert not is_distributed("auto") and not is_distributed(None)


# One script trains all three models in turn under one DDP launch: every new process imports scvi-tools
# (20-30 s on 2 cores), so one launch instead of three saves about two minutes of the suite. Lightning
# launches the second process at the first fit; later fits reuse both processes and the process group.
DDP_SCRIPT = """
    import hashlib, json, os, sys
    import numpy as np
    import chromtools as ct

    def sha(model):
        return hashlib.sha1(b"".join(v.numpy().tobytes() for v in model.module.state_dict().values())).hexdigest()

    def reference(out):
        adata = ct.datasets.simulate_scatac(1200, 800, n_batches=2, random_state=0)
        ref = adata[adata.obs["batch"] == "batch_0"].copy()
        folder = f"{out}/reference{os.environ.get('LOCAL_RANK', '0')}"
        ct.tl.train_reference(
            ref, "batch", "cell_type", model_dir=folder, max_epochs=4, accelerator="cpu", devices=2,
            train_kwargs={"strategy": "ddp", "batch_size": 64},
        )
        model = ct.tl.load_model(folder)
        hist = model.history or {}
        losses = [float(v) for v in hist["validation_loss"].to_numpy().ravel()] if "validation_loss" in hist else []
        return {"weights": sha(model), "losses": losses}

    def denoiser(out):
        sim = ct.datasets.simulate_tracks(out + "/sim", chrom_sizes={"chr1": 900_000, "chr2": 400_000}, random_state=1)
        data = ct.models.TrackDenoiser.setup_tracks(sim.noisy, sim.clean, sim.peaks, val_chroms=["chr2"])
        model = ct.models.TrackDenoiser(data)
        # the global batch of a one-process run with batch_size=4: 2 windows in each of two processes
        model.train(max_epochs=3, batch_size=2, accelerator="cpu", devices=2, strategy="ddp", progress=False)
        hist = model.history or {}
        auprc = [float(v) for v in hist["auprc_validation"].to_numpy().ravel()] if "auprc_validation" in hist else []
        return {"best": model.best_score_, "weights": sha(model), "history": auprc}

    def vrnn(out):
        adata = ct.datasets.simulate_timecourse(200, cells_per_time=30, random_state=0)
        ct.tl.vrnn_cluster(
            adata, "time", 4, layer="counts", max_epochs=8, accelerator="cpu", devices=2,
            train_kwargs={"strategy": "ddp"},
        )
        z = np.asarray(adata.varm["X_vrnn"], dtype=float)
        return {"z": np.round(z, 5).tolist(), "clusters": adata.var["vrnn_cluster"].astype(str).tolist()}

    def main(out):
        result = {"reference": reference(out), "denoiser": denoiser(out), "vrnn": vrnn(out)}
        with open(f"{out}/rank{os.environ.get('LOCAL_RANK', '0')}.json", "w") as fh:
            json.dump(result, fh)

    if __name__ == "__main__":
        main(sys.argv[1])
"""


@pytest.fixture(scope="module")
def ddp_ranks(tmp_path_factory) -> list[dict]:
    """What each of the two DDP processes wrote after training the three models."""
    folder = tmp_path_factory.mktemp("ddp")
    path = folder / "train.py"
    path.write_text(textwrap.dedent(DDP_SCRIPT))
    out = subprocess.run(
        [sys.executable, str(path), str(folder)], capture_output=True, text=True, timeout=1800, cwd=folder
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return [json.loads((folder / f"rank{r}.json").read_text()) for r in (0, 1)]


@pytest.mark.slow
def test_reference_model_trains_with_ddp_on_two_cpu_processes(ddp_ranks):
    ranks = [r["reference"] for r in ddp_ranks]
    assert ranks[0]["weights"] == ranks[1]["weights"]  # DDP keeps one model across processes
    assert len(ranks[0]["losses"]) == 4 and ranks[0]["losses"][-1] < ranks[0]["losses"][0]


@pytest.mark.slow
def test_denoiser_trains_with_ddp_and_keeps_the_best_epoch(ddp_ranks):
    ranks = [r["denoiser"] for r in ddp_ranks]
    # both processes end with the same weights and the same kept score ...
    assert ranks[0]["weights"] == ranks[1]["weights"] and ranks[0]["best"] == ranks[1]["best"]
    # ... which is the best epoch's validation AUPRC, not the last one's
    assert ranks[0]["history"] and ranks[0]["best"] == pytest.approx(max(ranks[0]["history"]), abs=1e-6)


@pytest.mark.slow
def test_vrnn_trains_with_ddp_on_two_cpu_processes(ddp_ranks):
    ranks = [r["vrnn"] for r in ddp_ranks]
    # one model across the processes: the same latents and modules in both
    assert ranks[0]["z"] == ranks[1]["z"] and ranks[0]["clusters"] == ranks[1]["clusters"]
    assert len(set(ranks[0]["clusters"])) == 4
