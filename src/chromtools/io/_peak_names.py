"""Peak coordinates from peak names (``chr1:100-200``, ``chr1-100-200``, ``chr1_100_200``)."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from chromtools._docs import doc_params
from chromtools._utils import get_modality

if TYPE_CHECKING:
    from anndata import AnnData
    from mudata import MuData

logger = logging.getLogger(__name__)

# The chromosome is everything before the last two numbers; it may itself contain '_' or '-'
# (e.g. 'chr1_KI270706v1_random'), so the match is anchored on the two numbers at the end.
_PEAK = re.compile(r"^(?P<chrom>.+?)[:_-](?P<start>\d+)[-_](?P<end>\d+)$")


def parse_peak_names(names: Iterable[str], *, one_based: bool = False) -> pd.DataFrame:
    """Parse peak names into chromosome, start and end.

    Parameters
    ----------
    names
        Names such as ``'chr1:100-200'`` (10x, muon), ``'chr1-100-200'`` (Signac, ArchR exports)
        or ``'chr1_100_200'``.
    one_based
        The names use 1-based, closed coordinates (as R/GRanges exports do); converted to
        0-based, half-open by subtracting 1 from the start.

    Returns
    -------
    A DataFrame indexed by name with columns ``chrom`` (categorical), ``start`` and ``end``
    (int64, 0-based half-open).
    """
    index = pd.Index([str(n) for n in names])
    parts = index.str.extract(_PEAK)
    bad = parts["chrom"].isna().to_numpy()
    if bad.any():
        examples = list(index[bad][:3])
        msg = (
            f"{int(bad.sum())} peak names are not of the form 'chr1:100-200', 'chr1-100-200' or 'chr1_100_200', "
            f"e.g. {examples}; rename them or set var['chrom'/'start'/'end'] yourself."
        )
        raise ValueError(msg)
    start = parts["start"].astype(np.int64).to_numpy() - int(one_based)
    end = parts["end"].astype(np.int64).to_numpy()
    inverted = end <= start
    if inverted.any():
        msg = f"Peak {index[inverted][0]!r} has end <= start; peak names must have start < end."
        raise ValueError(msg)
    return pd.DataFrame(
        {"chrom": pd.Categorical(parts["chrom"].to_numpy()), "start": start, "end": end},
        index=index,
    )


@doc_params
def add_peak_coordinates(
    data: AnnData | MuData, *, one_based: bool = False, mod: str | None = None, copy: bool = False
) -> AnnData | MuData | None:
    """Parse ``var_names`` of a peak-count matrix into ``var`` columns chrom/start/end.

    Parameters
    ----------
    {data}
    one_based
        The names use 1-based closed coordinates; they are stored 0-based half-open.
    {mod}
    {copy}

    Returns
    -------
    Writes ``var['chrom']``, ``var['start']``, ``var['end']`` (0-based, half-open); returns the
    object when ``copy=True``, else ``None``.
    """
    data = data.copy() if copy else data
    adata = get_modality(data, mod)
    coords = parse_peak_names(adata.var_names, one_based=one_based)
    for col in ("chrom", "start", "end"):
        adata.var[col] = coords[col].to_numpy()
    adata.var["chrom"] = adata.var["chrom"].astype("category")
    return data if copy else None
