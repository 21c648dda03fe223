"""Pseudobulk coverage tracks from fragments: Tn5 cut sites per cell group, streamed to bigWig."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
from tqdm import tqdm

from chromtools._docs import doc_params
from chromtools._utils import PathLike, check_random_state, get_modality, log_time

from ._bigwig import BigWigWriter
from ._fragments import fragments_path, iter_fragments
from ._sizes import read_chrom_sizes

if TYPE_CHECKING:
    from anndata import AnnData
    from mudata import MuData

logger = logging.getLogger(__name__)


def cut_site_runs(cuts: np.ndarray, chrom_size: int, smooth: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coverage runs of Tn5 cut sites on one chromosome, without a per-base array.

    Parameters
    ----------
    cuts
        0-based cut-site positions (any order).
    chrom_size
        Chromosome length; positions outside ``[0, chrom_size)`` are clipped to it.
    smooth
        Window (bp) centred on every cut site; ``0`` or ``1`` counts cut sites per base.

    Returns
    -------
    ``(starts, ends, values)`` of the non-zero runs, values as float32 counts.
    """
    cuts = np.clip(np.asarray(cuts, dtype=np.int64), 0, chrom_size - 1)
    if cuts.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    if smooth <= 1:
        pos, counts = np.unique(cuts, return_counts=True)
        return pos, pos + 1, counts.astype(np.float32)
    left = np.clip(cuts - smooth // 2, 0, chrom_size)
    right = np.clip(cuts - smooth // 2 + smooth, 0, chrom_size)
    events, inverse = np.unique(np.concatenate([left, right]), return_inverse=True)
    delta = np.bincount(inverse, weights=np.repeat([1.0, -1.0], cuts.size), minlength=events.size)
    level = np.cumsum(delta)[:-1]
    keep = level > 0.5
    return events[:-1][keep], events[1:][keep], level[keep].astype(np.float32)


def _select_cells(
    obs: pd.DataFrame,
    groupby: str,
    groups: Sequence[str] | None,
    n_cells: int | None,
    rng: np.random.Generator,
) -> dict[str, pd.Index]:
    if groupby not in obs.columns:
        msg = f"obs has no column '{groupby}' to group cells by; pass groupby=<one of {list(obs.columns)[:10]}>."
        raise KeyError(msg)
    labels = obs[groupby]
    if labels.isna().any():
        logger.warning("%d cells have no '%s' value and are left out.", int(labels.isna().sum()), groupby)
    present = [str(g) for g in pd.unique(labels.dropna().astype(str))]
    if groups is None:
        groups = sorted(present)
    missing = [g for g in groups if g not in present]
    if missing:
        msg = f"Groups {missing} have no cells in obs['{groupby}'] (it has {present[:10]}); fix groups=..."
        raise KeyError(msg)
    out: dict[str, pd.Index] = {}
    str_labels = labels.astype(str).to_numpy()
    for g in groups:
        cells = obs.index[str_labels == g]
        if n_cells is not None:
            if len(cells) < n_cells:
                msg = (
                    f"Group '{g}' of '{groupby}' has {len(cells)} cells, fewer than n_cells={n_cells}; lower n_cells "
                    "or leave the group out with groups=[...]."
                )
                raise ValueError(msg)
            cells = cells[np.sort(rng.choice(len(cells), size=n_cells, replace=False))]
        out[g] = cells
    return out


def _safe_name(group: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in group)


def _file_stems(groups: Sequence[str]) -> dict[str, str]:
    """A distinct, file-system-safe stem per group: ``'T/NK'`` and ``'T NK'`` must not share ``T_NK.bw``.

    Characters other than letters, digits, ``-``, ``_`` and ``.`` become ``_``; a group whose stem
    is taken already (compared case-insensitively, as on macOS and Windows) gets ``_2``, ``_3``...
    """
    stems: dict[str, str] = {}
    taken: set[str] = set()
    for g in groups:
        base = _safe_name(str(g)) or "group"
        stem, n = base, 1
        while stem.casefold() in taken:
            n += 1
            stem = f"{base}_{n}"
        taken.add(stem.casefold())
        stems[g] = stem
    return stems


@doc_params
def pseudobulk_coverage(
    data: AnnData | MuData,
    groupby: str,
    out_dir: PathLike,
    *,
    fragments: PathLike | None = None,
    groups: Sequence[str] | None = None,
    n_cells: int | None = None,
    chrom_sizes: PathLike | Mapping[str, int] | None = None,
    chroms: Sequence[str] | None = None,
    shift: tuple[int, int] = (0, 0),
    smooth: int = 0,
    normalize: Literal["cpm", "per_cell"] | None = None,
    prefix: str = "",
    random_state: int | None = 0,
    mod: str | None = None,
    chunksize: int = 2_000_000,
    progress: bool = True,
) -> pd.DataFrame:
    """Coverage tracks of Tn5 cut sites for each cell group, written as bigWigs.

    Every fragment contributes two Tn5 insertions (cut sites), at ``start + shift[0]`` and
    ``end - 1 + shift[1]`` (0-based; ``end`` is exclusive). Cell Ranger ATAC/ARC fragments already
    carry the standard +4/-5 Tn5 adjustment, so the default ``(0, 0)`` is right for them; pass
    ``shift=(4, -5)`` for fragments built from unadjusted read pairs.
    The file is streamed once, chromosome by chromosome; memory grows with the fragments of one
    chromosome, not the genome.

    Parameters
    ----------
    {data}
    groupby
        Column of ``obs`` whose values define the groups (cell types, clusters ...).
    out_dir
        Folder for the bigWigs, ``{{prefix}}{{group}}.bw``; created if needed. Characters of the
        group other than letters, digits, ``-``, ``_`` and ``.`` become ``_``, and a group whose
        file name is taken by another (``'T/NK'`` and ``'T NK'``) gets ``_2``, ``_3``... (the
        ``path`` column says which file is whose).
    fragments
        Fragments file; default ``uns['files']['fragments']``.
    groups
        Groups to build; default every group present.
    n_cells
        Randomly pick this many cells from each group (e.g. 50 for a low-coverage track).
        A group with fewer cells raises an error.
    chrom_sizes
        Sizes for the bigWig headers (``.sizes`` file, bigWig or mapping). Default: inferred
        from the whole fragments file, all cells together (the last cut site on each chromosome
        plus the ``smooth`` window), so every group, and every call on the same file, gets the same
        genome.
    chroms
        Only these chromosomes; others in the file are skipped.
    shift
        Offsets added to the two fragment ends to get the cut sites; ``(4, -5)`` applies the
        standard Tn5 adjustment to unadjusted fragments.
    smooth
        Window (bp) centred on each cut site; the track then counts cut sites within it.
        ``0`` counts cut sites per base.
    normalize
        ``"cpm"``: per million cut sites of the group; ``"per_cell"``: per cell of the group;
        ``None``: raw counts.
    prefix
        Prefix of the file names.
    {random_state}
    {mod}
    chunksize
        Fragments read at a time.
    {progress}

    Returns
    -------
    A DataFrame indexed by group with columns ``n_cells``, ``n_fragments``, ``n_cut_sites`` and
    ``path``; ``.attrs['chrom_sizes']`` holds the chromosome sizes written in the bigWig headers.
    """
    adata = get_modality(data, mod)
    frag_path = Path(fragments) if fragments is not None else fragments_path(data, mod=mod)
    rng = check_random_state(random_state)
    cells = _select_cells(adata.obs, groupby, groups, n_cells, rng)
    if smooth < 0:
        msg = f"smooth must be >= 0 bp, got {smooth}."
        raise ValueError(msg)
    names = list(cells)
    stems = _file_stems(names)
    barcode_index = pd.Index(np.concatenate([np.asarray(c, dtype=object) for c in cells.values()]))
    if not barcode_index.is_unique:
        msg = (
            "Cell barcodes (obs_names) must be unique to assign fragments to groups; run adata.obs_names_make_unique()."
        )
        raise ValueError(msg)
    group_of = np.repeat(np.arange(len(names)), [len(c) for c in cells.values()])
    sizes = read_chrom_sizes(chrom_sizes) if chrom_sizes is not None else None
    keep_chroms = set(chroms) if chroms is not None else None
    if sizes is not None and keep_chroms is not None:
        unknown = sorted(keep_chroms - set(sizes))
        if unknown:
            msg = f"chroms {unknown} are not in chrom_sizes; fix chroms=... or the sizes."
            raise KeyError(msg)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if normalize not in (None, "cpm", "per_cell"):
        msg = f"normalize must be 'cpm', 'per_cell' or None, got {normalize!r}."
        raise ValueError(msg)
    n_frag = np.zeros(len(names), np.int64)
    n_cuts = np.zeros(len(names), np.int64)
    seen: list[str] = []
    last_cut: dict[str, int] = {}
    current: str | None = None
    buf_cuts: list[np.ndarray] = []
    buf_group: list[np.ndarray] = []

    with (
        tempfile.TemporaryDirectory(prefix="ct_cov_") as spill_dir,
        log_time(f"Cut-site coverage of {len(names)} groups from '{frag_path.name}'", logger),
    ):
        spill = Path(spill_dir)

        def flush() -> None:
            if current is None:
                return
            cuts = np.concatenate(buf_cuts) if buf_cuts else np.zeros(0, np.int64)
            grp = np.concatenate(buf_group) if buf_group else np.zeros(0, np.int64)
            size = sizes[current] if sizes is not None else inferred_size(current)
            order = np.argsort(grp, kind="stable")
            bounds = np.searchsorted(grp[order], np.arange(len(names) + 1))
            for g in range(len(names)):
                runs = cut_site_runs(cuts[order[bounds[g] : bounds[g + 1]]], size, smooth)
                np.savez(spill / f"{g}_{len(seen)}.npz", *runs)
            seen.append(current)
            buf_cuts.clear()
            buf_group.clear()

        def inferred_size(chrom: str) -> int:
            # one source for every group: the last cut site of any cell of the file, plus the smoothing window
            return int(last_cut[chrom]) + max(smooth, 1)

        bar = tqdm(desc="fragments", unit="frag", unit_scale=True, disable=not progress)
        for chunk in iter_fragments(frag_path, chunksize=chunksize):
            bar.update(len(chunk))
            if sizes is None:
                hi = np.maximum(chunk["start"].to_numpy() + shift[0], chunk["end"].to_numpy() - 1 + shift[1])
                codes_all, uniq_all = pd.factorize(chunk["chrom"].to_numpy(), sort=False)
                top = np.full(len(uniq_all), -1, np.int64)
                np.maximum.at(top, codes_all, hi)
                for chrom, v in zip(uniq_all, top, strict=True):
                    last_cut[chrom] = max(last_cut.get(chrom, -1), int(v))
            pos = barcode_index.get_indexer(chunk["barcode"])
            sel = pos >= 0
            if not sel.any():
                continue
            chunk_chroms = chunk["chrom"].to_numpy()[sel]
            grp = group_of[pos[sel]]
            starts = chunk["start"].to_numpy()[sel] + shift[0]
            ends = chunk["end"].to_numpy()[sel] - 1 + shift[1]
            codes, uniq = pd.factorize(chunk_chroms, sort=False)
            for ci, chrom in enumerate(uniq):
                if keep_chroms is not None and chrom not in keep_chroms:
                    continue
                if sizes is not None and chrom not in sizes:
                    msg = (
                        f"Fragments on chromosome '{chrom}' are not covered by chrom_sizes; pass chroms=[...] "
                        "to skip other chromosomes, or use sizes of the fragments' genome."
                    )
                    raise KeyError(msg)
                if chrom != current:
                    if chrom in seen:
                        msg = (
                            f"Fragments file '{frag_path}' is not sorted by chromosome ('{chrom}' appears twice); "
                            "sort it with `sort -k1,1 -k2,2n` and re-index it with `tabix -p bed`."
                        )
                        raise ValueError(msg)
                    flush()
                    current = chrom
                here = codes == ci
                buf_cuts.extend([starts[here], ends[here]])
                buf_group.extend([grp[here], grp[here]])
                n_frag += np.bincount(grp[here], minlength=len(names))
        flush()
        bar.close()

        header = sizes if sizes is not None else {c: inferred_size(c) for c in last_cut}
        if keep_chroms is not None:
            header = {c: s for c, s in header.items() if c in keep_chroms}
        if not seen:
            msg = f"No fragment of the selected cells was found in '{frag_path}'; check that obs_names match its barcodes."
            raise ValueError(msg)
        rows = []
        for g, name in enumerate(names):
            parts = {c: np.load(spill / f"{g}_{i}.npz") for i, c in enumerate(seen)}
            n_cuts[g] = 2 * n_frag[g]
            scale = 1.0
            if normalize == "cpm":
                scale = 1e6 / max(n_cuts[g], 1)
            elif normalize == "per_cell":
                scale = 1.0 / len(cells[name])
            path = out_dir / f"{prefix}{stems[name]}.bw"
            with BigWigWriter(path, header) as out:
                for chrom in header:
                    if chrom in parts:
                        s, e, v = parts[chrom]["arr_0"], parts[chrom]["arr_1"], parts[chrom]["arr_2"]
                        out.add_intervals(chrom, s, e, v * scale)
            rows.append(
                {
                    "group": name,
                    "n_cells": len(cells[name]),
                    "n_fragments": int(n_frag[g]),
                    "n_cut_sites": int(n_cuts[g]),
                    "path": str(path),
                }
            )
    table = pd.DataFrame(rows).set_index("group")
    table.attrs["chrom_sizes"] = {str(c): int(v) for c, v in header.items()}
    return table
