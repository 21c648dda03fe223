"""Low-/high-coverage training pairs from single-cell fragments (the AtacWorks dsc-ATAC design).

A tool, not preprocessing: its clean peaks come from :func:`chromtools.tl.macs3_peaks`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from chromtools._docs import doc_params
from chromtools._utils import PathLike
from chromtools.io import pseudobulk_coverage, write_chrom_sizes

if TYPE_CHECKING:
    from anndata import AnnData
    from mudata import MuData

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingPair:
    """A noisy/clean coverage pair of one cell group, and the clean peaks.

    Attributes
    ----------
    noisy
        Coverage of ``n_cells`` randomly chosen cells.
    clean
        Coverage of all cells of the group.
    peaks
        Peaks of the clean track (MACS3, or the file given).
    n_cells_noisy, n_cells_clean
        Cells behind each track.
    chrom_sizes
        The ``.sizes`` file of the genome both tracks were written on (pass it to
        :func:`chromtools.tl.denoise_groups` to denoise on exactly this genome).
    """

    noisy: Path
    clean: Path
    peaks: Path
    n_cells_noisy: int
    n_cells_clean: int
    chrom_sizes: Path


class _CoverageOptions(TypedDict):
    """The options both tracks of a training pair share (:func:`chromtools.io.pseudobulk_coverage`)."""

    groups: Sequence[str]
    fragments: PathLike | None
    chrom_sizes: PathLike | Mapping[str, int] | None
    chroms: Sequence[str] | None
    smooth: int
    mod: str | None
    progress: bool


@doc_params
def training_pair(
    data: AnnData | MuData,
    groupby: str,
    group: str,
    out_dir: PathLike,
    *,
    n_cells: int = 50,
    peaks: PathLike | None = None,
    fragments: PathLike | None = None,
    chrom_sizes: PathLike | Mapping[str, int] | None = None,
    chroms: Sequence[str] | None = None,
    smooth: int = 200,
    macs3_cutoff: float = 3.0,
    random_state: int = 0,
    mod: str | None = None,
    progress: bool = True,
) -> TrainingPair:
    """Build a denoising training pair from one cell group: ``n_cells`` cells vs all of them.

    This is how AtacWorks' dsc-ATAC models were trained (e.g. 50 vs 2,400 monocytes): the noisy
    track is the cut-site coverage of a random subset of the group's cells, the clean track that
    of every cell, and the labels are the peaks of the clean track.

    Parameters
    ----------
    {data}
    groupby
        Column of ``obs`` holding the groups.
    group
        The group to use (it needs more than ``n_cells`` cells).
    out_dir
        Folder for ``{{group}}.noisy.bw``, ``{{group}}.clean.bw`` and ``{{group}}.clean_peaks.narrowPeak``.
    n_cells
        Cells in the noisy track.
    peaks
        Clean peaks to use as labels; default: called on the clean track with MACS3
        (:func:`chromtools.tl.macs3_peaks`, needs the ``peaks`` extra).
    fragments
        Fragments file; default ``uns['files']['fragments']``.
    chrom_sizes
        Genome sizes; default inferred once from the whole fragments file (all cells), and used for
        both tracks, so that they share one genome. Written to ``{{out_dir}}/chrom.sizes``.
    chroms
        Only these chromosomes.
    smooth
        Cut-site window (bp) of the coverage tracks; 200 matches AtacWorks' published models
        (each cut site extended 100 bp to each side). Use the same value when denoising.
    macs3_cutoff
        -log10 p-value cutoff of the MACS3 clean peaks.
    {random_state}
    {mod}
    {progress}

    Returns
    -------
    The paths of the pair and its labels.
    """
    out = Path(out_dir)
    common: _CoverageOptions = {
        "groups": [group],
        "fragments": fragments,
        "chrom_sizes": chrom_sizes,
        "chroms": chroms,
        "smooth": smooth,
        "mod": mod,
        "progress": progress,
    }
    clean = pseudobulk_coverage(data, groupby, out, prefix="clean.", **common)
    # one genome for both tracks: the sizes the clean track was written with
    common["chrom_sizes"] = clean.attrs["chrom_sizes"]
    sizes_file = write_chrom_sizes(clean.attrs["chrom_sizes"], out / "chrom.sizes")
    n_total = int(clean.loc[group, "n_cells"])
    if n_total <= n_cells:
        msg = f"Group '{group}' has {n_total} cells; the noisy track needs fewer (n_cells={n_cells}). Lower n_cells."
        raise ValueError(msg)
    noisy = pseudobulk_coverage(
        data, groupby, out, prefix="noisy.", n_cells=n_cells, random_state=random_state, **common
    )
    if peaks is None:
        from chromtools.tl._macs3 import macs3_peaks

        peaks = out / f"clean_peaks.{group}.narrowPeak"
        called = macs3_peaks(clean.loc[group, "path"], peaks, cutoff=macs3_cutoff)
        if called.empty:
            msg = f"MACS3 found no peak on the clean track of '{group}'; pass peaks=... or use a larger group."
            raise ValueError(msg)
    logger.info("Training pair for '%s': %d vs %d cells", group, n_cells, n_total)
    return TrainingPair(
        noisy=Path(noisy.loc[group, "path"]),
        clean=Path(clean.loc[group, "path"]),
        peaks=Path(peaks),
        n_cells_noisy=int(noisy.loc[group, "n_cells"]),
        n_cells_clean=n_total,
        chrom_sizes=sizes_file,
    )
