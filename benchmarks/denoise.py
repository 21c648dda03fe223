"""Track denoising on the real HSC pair: baselines vs both architectures, throughput and memory.

Run: ``python benchmarks/denoise.py [--epochs 3] [--default-epochs 12] [--train-threads 2]``
(writes ``benchmarks/results/denoise.json``). Train on chr1, evaluate on chr2 of
``../shared/data/atac_hsc_bulk``. Both architectures get the same budget: the same windows, batch
size, learning-rate schedule, number of epochs and early-stopping rule (AtacWorks on CPU costs about
ten times more per epoch, so the shared budget is small); the default is also trained on a longer
budget of its own. Throughput is measured end to end (read bigWig, network, write bigWigs, call peaks) and for
the network alone; peak memory is measured on simulated genomes of 100 and 300 Mb, each denoised in
its own process.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, require_data, timer, write_results

import chromtools as ct

TARGETS = {
    "default_bp_per_s": 1.7e6,
    "speedup_vs_atacworks": 10.0,
    "auprc": 0.85,
    "peak_f1": 0.80,
    "peak_memory_gb": 4.0,
}
KEYS = [
    "auprc",
    "auroc",
    "base_precision",
    "base_recall",
    "base_f1",
    "peak_precision",
    "peak_recall",
    "peak_f1",
    "pearson",
    "spearman",
    "pearson_outside_peaks",
    "spearman_outside_peaks",
    "pearson_in_peaks",
    "mse",
]


def pick(d: dict) -> dict:
    return {
        k: (None if d.get(k) is None or (isinstance(d[k], float) and np.isnan(d[k])) else float(d[k]))
        for k in KEYS
        if k in d
    }


def network_throughput(model, seconds: float = 20.0) -> float:
    """Bases per second of the network alone on full windows (padding counted as overhead)."""
    spec = model.spec_
    x = np.random.default_rng(0).random((8, spec["n_channels"], spec["window"] + 2 * spec["pad"])).astype(np.float32)
    model.predict_windows(x[:1])
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        model.predict_windows(x)
        n += 8
    return n * spec["window"] / (time.perf_counter() - start)


# AtacWorks' published learning rate (2e-4) is tuned for 25+ GPU epochs; on a budget of a few epochs
# it under-trains, and 3e-3 (our default's) can diverge for its 51-wide ReLU stacks, so it gets 1e-3.
LR = {"default": 3e-3, "atacworks": 1e-3}


def load_trained(name: str, model_dir: Path) -> tuple:
    """A model trained by an earlier run with ``--model-dir``, and its training record."""
    model = ct.models.TrackDenoiser.load(model_dir / f"model_{name}")
    return model, json.loads((model_dir / f"train_info_{name}.json").read_text())


def train(arch: str, hsc, epochs: int, work: Path, name: str) -> tuple:
    setup = ct.models.TrackDenoiser.setup_tracks(hsc.noisy, hsc.clean, hsc.peaks, val_chroms=["chr2"], window=50_000)
    model = ct.models.TrackDenoiser(setup, arch=arch)
    with timer() as t:
        model.train(max_epochs=epochs, lr=LR[arch], accelerator="cpu", progress=False, random_state=0)
    auprc = model.history.get("auprc_validation")
    curve = [round(float(v), 4) for v in auprc.astype(float).iloc[:, 0]] if auprc is not None else []
    model.save(work / f"model_{name}", overwrite=True)
    info = {
        "arch": arch,
        "lr": LR[arch],
        "parameters": int(sum(p.numel() for p in model.module.parameters())),
        "receptive_field_bp": model.spec_["receptive_field"],
        "bin_size": model.spec_["bin_size"],
        "train_seconds": t["seconds"],
        "epochs_run": len(curve),
        "max_epochs": epochs,
        "best_validation_auprc": model.best_score_,
        "validation_auprc_per_epoch": curve,
        "train_threads": torch.get_num_threads(),
    }
    (work / f"train_info_{name}.json").write_text(json.dumps(info, indent=1))
    return model, info


def memory_run(size_mb: int, model_dir: Path, work: Path) -> dict:
    """Simulate a genome of ``size_mb`` Mb and denoise it in a fresh process; report peak RSS."""
    n_chrom = max(size_mb // 100, 1)
    sizes = {f"chr{i + 1}": size_mb * 1_000_000 // n_chrom for i in range(n_chrom)}
    sim = ct.datasets.simulate_tracks(work / f"genome_{size_mb}", chrom_sizes=sizes, random_state=1)
    code = (
        "import json, resource, sys, torch, chromtools as ct\n"
        "r = ct.tl.denoise(sys.argv[1], sys.argv[2], sys.argv[3], accelerator='cpu', progress=False, check_genome=False)\n"
        "print(json.dumps({'seconds': r.seconds, 'bp': r.n_bases, 'bp_per_s': r.bases_per_second, 'peaks': len(r.peak_table),"
        " 'peak_rss_gb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(sim.noisy), str(model_dir), str(work / f"genome_{size_mb}" / "out")],
        capture_output=True,
        text=True,
        check=True,
    )
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["genome_mb"] = size_mb
    return res


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3, help="shared epoch budget of both architectures")
    parser.add_argument(
        "--default-epochs", type=int, default=12, help="also train the default for this many epochs (0: skip)"
    )
    parser.add_argument("--train-threads", type=int, default=2, help="torch threads while training")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for inference throughput")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--model-dir", type=Path, help="keep the trained models here (default: a temporary folder)")
    parser.add_argument(
        "--skip-training", action="store_true", help="re-measure the models of an earlier run with --model-dir"
    )
    args = parser.parse_args()
    if args.skip_training and args.model_dir is None:
        parser.error("--skip-training needs --model-dir (the folder of an earlier run)")
    data = require_data()
    hsc = ct.datasets.hsc_bulk(data)
    chroms = ["chr2"]
    results: dict = {
        "machine": machine(),
        "command": "python benchmarks/denoise.py " + " ".join(sys.argv[1:]),
        "train_threads": args.train_threads,
        "inference_threads": args.threads,
        "data": "atac_hsc_bulk (hg19, first 10 Mb of chr1/chr2): train chr1, evaluate chr2",
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model_dir = args.model_dir or work
        model_dir.mkdir(parents=True, exist_ok=True)
        ratio = ct.models._track_data.bigwig_mean(hsc.clean) / ct.models._track_data.bigwig_mean(hsc.noisy)
        base = {}
        base["noisy_track"] = pick(
            ct.metrics.evaluate_denoising(
                hsc.clean,
                hsc.peaks,
                track=hsc.noisy,
                peakprob=hsc.noisy,
                chroms=chroms,
                threshold=1.0,
                scale_track=ratio,
            )
        )
        base["macs_peaks_on_noisy_given"] = pick(
            ct.metrics.evaluate_denoising(hsc.clean, hsc.peaks, peaks=hsc.noisy_peaks, chroms=chroms)
        )
        given_mask = ct.metrics.peak_mask(hsc.noisy_peaks, "chr2", 10_000_000)
        truth_mask = ct.metrics.peak_mask(hsc.peaks, "chr2", 10_000_000)
        cls = ct.metrics.peak_classification(given_mask.astype(float), truth_mask, threshold=0.5)
        base["macs_peaks_on_noisy_given"].update(
            {"base_precision": cls["precision"], "base_recall": cls["recall"], "base_f1": cls["f1"]}
        )
        try:
            called = ct.tl.macs3_peaks(hsc.noisy, chroms=chroms)
            base["macs3_wrapper_on_noisy"] = pick(
                {f"peak_{k}": v for k, v in ct.metrics.peak_overlap(called, hsc.peaks, chroms=chroms).items()}
            )
        except ImportError:
            base["macs3_wrapper_on_noisy"] = "MACS3 not installed"
        results["baselines"] = base
        results["baselines"]["note"] = (
            "noisy_track: the noisy coverage is the per-base score (AUROC/AUPRC) and, times the clean/noisy depth "
            f"ratio ({ratio:.2f}), the prediction for MSE; per-base P/R/F1 at coverage >= 1"
        )

        runs = [("default", "default", args.epochs), ("atacworks", "atacworks", args.epochs)]
        if args.default_epochs:
            runs.append(("default", f"default_{args.default_epochs}_epochs", args.default_epochs))
        models, trained = {}, {}
        torch.set_num_threads(args.train_threads)
        for arch, name, epochs in runs:
            if args.skip_training:
                trained[name], models[name] = load_trained(name, model_dir)
            else:
                trained[name], models[name] = train(arch, hsc, epochs, model_dir, name)
            print(
                name,
                json.dumps({k: models[name][k] for k in ("train_seconds", "epochs_run", "best_validation_auprc")}),
                flush=True,
            )
        torch.set_num_threads(args.threads)
        for name, model in trained.items():
            info = models[name]
            res = ct.tl.denoise(hsc.noisy, model, work / name / "hsc", accelerator="cpu", progress=False)
            ev = ct.metrics.evaluate_denoising(
                hsc.clean, hsc.peaks, track=res.track, peakprob=res.peakprob, peaks=res.peaks, chroms=chroms
            )
            info["metrics_chr2"] = pick(ev)
            info["inference_end_to_end_bp_per_s"] = res.bases_per_second
            info["inference_end_to_end_seconds_20mb"] = res.seconds
            info["inference_network_only_bp_per_s"] = network_throughput(model)
            info["peaks_called_chr2"] = int((res.peak_table["chrom"] == "chr2").sum())
            print(name, json.dumps(info["metrics_chr2"]), info["inference_end_to_end_bp_per_s"], flush=True)
        results["models"] = models
        d, a = models["default"], models["atacworks"]
        results["speedup_default_vs_atacworks"] = {
            "end_to_end": d["inference_end_to_end_bp_per_s"] / a["inference_end_to_end_bp_per_s"],
            "network_only": d["inference_network_only_bp_per_s"] / a["inference_network_only_bp_per_s"],
        }
        if not args.skip_memory:
            results["genome_wide_memory"] = [memory_run(mb, model_dir / "model_default", work) for mb in (100, 300)]
    mem = max(r["peak_rss_gb"] for r in results.get("genome_wide_memory", [{"peak_rss_gb": float("nan")}]))
    dm = d["metrics_chr2"]
    best = max((m["metrics_chr2"] for k, m in models.items() if m["arch"] == "default"), key=lambda m: m["auprc"])
    results["targets"] = TARGETS
    results["targets_met"] = {
        "default_bp_per_s": d["inference_end_to_end_bp_per_s"] >= TARGETS["default_bp_per_s"],
        "speedup_vs_atacworks": results["speedup_default_vs_atacworks"]["end_to_end"]
        >= TARGETS["speedup_vs_atacworks"],
        "auprc": best["auprc"] >= TARGETS["auprc"],
        "peak_f1": best["peak_f1"] >= TARGETS["peak_f1"],
        "above_macs_on_noisy": best["peak_f1"] > base["macs_peaks_on_noisy_given"]["peak_f1"],
        "above_atacworks_same_budget": dm["auprc"] > a["metrics_chr2"]["auprc"]
        and dm["peak_f1"] > a["metrics_chr2"]["peak_f1"],
        "peak_memory_gb": mem < TARGETS["peak_memory_gb"],
    }
    write_results("denoise", results)
    print(json.dumps(results["targets_met"], indent=1))


if __name__ == "__main__":
    main()
