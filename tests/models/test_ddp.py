"""Multi-process training through Lightning's DDP strategy, on CPU (gloo) with 2 processes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import hashlib, json, os, sys
    import torch
    import chromtools as ct

    def main(out, devices):
        sim = ct.datasets.simulate_tracks(
            out + "/sim", chrom_sizes={"chr1": 900_000, "chr2": 400_000}, random_state=1
        )
        data = ct.models.TrackDenoiser.setup_tracks(sim.noisy, sim.clean, sim.peaks, val_chroms=["chr2"])
        model = ct.models.TrackDenoiser(data)
        # the same global batch: 4 windows in one process, 2 in each of two
        model.train(
            max_epochs=3, batch_size=4 // devices, accelerator="cpu", devices=devices,
            strategy="ddp" if devices > 1 else "auto", progress=False,
        )
        weights = hashlib.sha1(b"".join(v.numpy().tobytes() for v in model.module.state_dict().values())).hexdigest()
        rank = os.environ.get("LOCAL_RANK", "0")
        hist = model.history or {}
        history = [float(v) for v in hist["auprc_validation"].to_numpy().ravel()] if "auprc_validation" in hist else []
        with open(f"{out}/rank{rank}_{devices}.json", "w") as fh:
            json.dump({"best": model.best_score_, "weights": weights, "history": history}, fh)

    if __name__ == "__main__":
        main(sys.argv[1], int(sys.argv[2]))
    """
)


@pytest.mark.slow
def test_ddp_two_cpu_processes_agree_and_restore_the_best_epoch(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    out = subprocess.run(
        [sys.executable, str(script), str(tmp_path), "2"], capture_output=True, text=True, timeout=900, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}_2.json").read_text()) for r in (0, 1)]
    # both processes end with the same weights and the same kept score
    assert ranks[0]["weights"] == ranks[1]["weights"]
    assert ranks[0]["best"] == ranks[1]["best"]
    assert 0.0 < ranks[0]["best"] <= 1.0
    # the kept epoch is the best one seen, not the last
    assert ranks[0]["history"] and ranks[0]["best"] == pytest.approx(max(ranks[0]["history"]), abs=1e-6)
