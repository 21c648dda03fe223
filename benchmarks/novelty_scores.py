"""Which novelty score finds a cell type missing from the reference? A choice made on D5T1 -> D6T1 only.

Run: ``python benchmarks/novelty_scores.py`` (writes ``benchmarks/results/novelty_scores.json``, about 5 minutes on
2 cores). Data: Granja 2019 (``../shared/data/scatac_labelled``).

For each held-out type of the mapping benchmark (``HELD_OUT``, fixed there before any run), the type is dropped
from a D5T1 reference (PeakSCANVI with the settings the mapping benchmark chose, read from
``benchmarks/results/mapping.json``), the D6T1 query is mapped onto it, and the AUROC of telling the held-out
type's query cells apart is computed for two kNN novelty scores in the reference latent:

- ``density_ratio`` (chromtools' score, ``ct.tl.transfer_labels``): the median distance to the 15 nearest
  reference cells over those neighbours' own median distance to theirs;
- ``distance``: the median distance to the 15 nearest reference cells, not normalised by local density.

The score with the higher mean AUROC over the held-out types is the one to use; the report split
(D6T1 -> D5T1) is not touched here. Seeds 0 and 1.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import chosen_mapping_kwargs, git_commit, machine, require_data, write_results


def main() -> None:
    import torch
    from mapping import HELD_OUT, LABEL, N_NEIGHBORS, load
    from sklearn.neighbors import NearestNeighbors

    import chromtools as ct

    require_data()
    torch.set_num_threads(2)
    chosen = chosen_mapping_kwargs()
    out: dict = {
        "git_commit": git_commit(),
        "machine": machine(),
        "command": "python benchmarks/novelty_scores.py",
        "split": "choose: reference D5T1 without the held-out type, query D6T1 (the report split is not used)",
        "model_kwargs": chosen,
        "n_neighbors": N_NEIGHBORS,
        "auroc": {},
    }
    for seed in (0, 1):
        for held in HELD_OUT:
            ref, query = load("choose", drop_type=held)
            with tempfile.TemporaryDirectory() as model_dir:
                ct.tl.train_reference(
                    ref, "batch", LABEL, model_dir=model_dir, random_state=seed, model_kwargs=chosen, progress=False
                )
                ct.tl.map_query(query, model_dir, random_state=seed)
            ct.tl.transfer_labels(query, ref, LABEL, n_neighbors=N_NEIGHBORS, key_added="pred")
            z_ref, z_q = ref.obsm["X_reference"], query.obsm["X_reference"]
            dist = NearestNeighbors(n_neighbors=N_NEIGHBORS).fit(z_ref).kneighbors(z_q)[0]
            is_new = (query.obs[LABEL].astype(str) == held).to_numpy()
            scores = {"density_ratio": query.obs["pred_novelty"].to_numpy(), "distance": np.median(dist, axis=1)}
            out["auroc"].setdefault(str(seed), {})[held] = {
                name: ct.metrics.unknown_detection_auroc(is_new, s) for name, s in scores.items()
            }
            print(seed, held, out["auroc"][str(seed)][held], flush=True)
    per_score = {
        name: [v[name] for by_type in out["auroc"].values() for v in by_type.values()]
        for name in ("density_ratio", "distance")
    }
    out["mean_sd"] = {
        name: {"mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1))} for name, v in per_score.items()
    }
    out["chosen"] = max(out["mean_sd"], key=lambda k: out["mean_sd"][k]["mean"])
    write_results("novelty_scores", out)
    print(json.dumps(out["mean_sd"], indent=1), "chosen:", out["chosen"])


if __name__ == "__main__":
    main()
