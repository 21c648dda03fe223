"""I/O throughput: bigWig read and write on the real HSC tracks, fragments → coverage on PBMC fragments.

Run: ``python benchmarks/io.py`` (writes ``benchmarks/results/io.json``).
Targets on a 2-core CPU: bigWig write >= 20 M bp/s of dense per-base values, read >= 50 M bp/s.
"""

from __future__ import annotations

import gzip
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import git_commit, machine, require_data, timer, write_results

import chromtools as ct

REPEATS = 5


def bench_bigwig(data: Path, work: Path) -> dict:
    hsc = ct.datasets.hsc_bulk(data)
    out = {}
    for label, path in (("noisy_5M", hsc.noisy), ("clean_80M", hsc.clean)):
        sizes = ct.io.read_chrom_sizes(path)
        n_bp = sum(sizes.values())
        read_s = []
        for _ in range(REPEATS):
            with timer() as t, ct.io.BigWigReader(path) as bw:
                tracks = {c: bw.values(c) for c in sizes}
            read_s.append(t["seconds"])
        write_s = []
        for i in range(REPEATS):
            with timer() as t:
                ct.io.write_bigwig(work / f"{label}_{i}.bw", tracks, sizes)
            write_s.append(t["seconds"])
        back = ct.io.BigWigReader(work / f"{label}_0.bw")
        exact = all(np.array_equal(back.values(c), tracks[c]) for c in sizes)
        back.close()
        out[label] = {
            "bp": n_bp,
            "read_seconds_median": statistics.median(read_s),
            "read_bp_per_s": n_bp / statistics.median(read_s),
            "write_seconds_median": statistics.median(write_s),
            "write_bp_per_s": n_bp / statistics.median(write_s),
            "runs_written": int(sum(ct.io.runs_from_values(v)[0].size for v in tracks.values())),
            "roundtrip_exact": exact,
        }
    # Worst case for run-length encoding: a value that changes at every base.
    rng = np.random.default_rng(0)
    noise = {"chr1": rng.normal(size=5_000_000).astype(np.float32)}
    with timer() as t:
        ct.io.write_bigwig(work / "noise.bw", noise)
    out["every_base_differs"] = {"bp": 5_000_000, "write_bp_per_s": 5_000_000 / t["seconds"]}
    return out


def bench_fragments(data: Path, work: Path) -> dict:
    mdata = ct.datasets.pbmc_multiome(data)
    atac = mdata.mod["atac"]
    atac.obs["half"] = np.where(np.arange(atac.n_obs) % 2 == 0, "a", "b")
    frag = ct.io.fragments_path(mdata)
    n_frag = sum(len(c) for c in ct.io.iter_fragments(frag))
    secs = []
    for i in range(REPEATS):
        with timer() as t:
            res = ct.io.pseudobulk_coverage(mdata, "half", work / f"pbmc_{i}", smooth=100, progress=False)
        secs.append(t["seconds"])
    real = {
        "fragments_in_file": n_frag,
        "fragments_of_selected_cells": int(res["n_fragments"].sum()),
        "seconds_median": statistics.median(secs),
        "fragments_per_s": n_frag / statistics.median(secs),
        "groups": 2,
        "smooth_bp": 100,
    }
    # A larger file with the same layout, to see the streaming rate once start-up costs are amortised.
    rng = np.random.default_rng(0)
    barcodes = np.asarray(atac.obs_names)
    big = work / "big_fragments.tsv.gz"
    n_big = 5_000_000
    with gzip.open(big, "wt", compresslevel=1) as fh:
        for chrom in ("chr1", "chr2", "chr3", "chr4", "chr5"):
            starts = np.sort(rng.integers(0, 50_000_000, size=n_big // 5))
            lengths = rng.integers(40, 600, size=starts.size)
            bcs = barcodes[rng.integers(0, barcodes.size, size=starts.size)]
            lines = [f"{chrom}\t{s}\t{s + length}\t{b}\t1\n" for s, length, b in zip(starts, lengths, bcs, strict=True)]
            fh.write("".join(lines))
    with timer() as parse:
        n_parsed = sum(len(c) for c in ct.io.iter_fragments(big))
    with timer() as t:
        res = ct.io.pseudobulk_coverage(mdata, "half", work / "big", fragments=big, smooth=100, progress=False)
    runs = 0
    for path in res["path"]:
        with ct.io.BigWigReader(path) as bw:
            runs += sum(bw.intervals(c)[0].size for c in bw.chrom_sizes)
    synthetic = {
        "fragments_in_file": n_big,
        "seconds": t["seconds"],
        "fragments_per_s": n_big / t["seconds"],
        "parse_only_fragments_per_s": n_parsed / parse["seconds"],
        "bigwig_runs_written": runs,
        "note": "uniformly scattered fragments give ~2 coverage runs per cut site; the time is dominated by "
        "pyBigWig addEntries (~1.5 M runs/s here), not by parsing",
    }
    return {"pbmc10x_real": real, "synthetic_5M": synthetic}


def main() -> None:
    data = require_data()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        bigwig = bench_bigwig(data, work)
        fragments = bench_fragments(data, work)
    targets = {"write_bp_per_s": 20e6, "read_bp_per_s": 50e6}
    results = {
        "machine": machine(),
        "git_commit": git_commit(),
        "command": "python benchmarks/io.py",
        "bigwig": bigwig,
        "fragments_to_coverage": fragments,
        "targets": targets,
        "targets_met": {
            "write": all(bigwig[k]["write_bp_per_s"] >= targets["write_bp_per_s"] for k in ("noisy_5M", "clean_80M")),
            "read": all(bigwig[k]["read_bp_per_s"] >= targets["read_bp_per_s"] for k in ("noisy_5M", "clean_80M")),
        },
    }
    write_results("io", results)
    for k in ("noisy_5M", "clean_80M"):
        b = bigwig[k]
        print(
            f"{k}: read {b['read_bp_per_s'] / 1e6:.1f} M bp/s, write {b['write_bp_per_s'] / 1e6:.1f} M bp/s, exact {b['roundtrip_exact']}"
        )
    print(
        f"fragments -> coverage: {fragments['pbmc10x_real']['fragments_per_s'] / 1e6:.2f} M fragments/s (PBMC), "
        f"{fragments['synthetic_5M']['fragments_per_s'] / 1e6:.2f} M fragments/s (5M synthetic)"
    )


if __name__ == "__main__":
    main()
