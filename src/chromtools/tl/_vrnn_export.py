"""``vrnn_export``: temporal modules, response classes and timing of every gene to a CSV file."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from anndata import AnnData

from chromtools._utils import PathLike, atomic_output, get_modality
from chromtools.tl._vrnn_cluster import _check_fitted

if TYPE_CHECKING:
    from mudata import MuData

logger = logging.getLogger(__name__)


def vrnn_export(
    data: AnnData | MuData,
    path: PathLike,
    *,
    key: str = "vrnn",
    mod: str | None = None,
    curves: bool = False,
    selected_only: bool = True,
) -> pd.DataFrame:
    """Write genes with their module, response class and timing to a CSV file.

    Parameters
    ----------
    data
        AnnData or MuData clustered by :func:`vrnn_cluster`.
    path
        Output CSV (written atomically: a failed write leaves no partial file).
    key
        Key of the clustering.
    mod
        Modality of a MuData.
    curves
        Add the per-time means (input units) as columns ``mean_<time label>``.
    selected_only
        Only the genes that were modelled.

    Returns
    -------
    The table written (one row per gene): ``gene``, ``cluster``, ``membership`` (largest soft
    membership), ``response``, ``onset``,
    ``peak_time``, ``baseline``, ``amplitude``, ``dynamic_score``, ``dynamic_qval``,
    ``stability`` (when :func:`vrnn_stability` was run) and ``selected``.
    """
    adata = get_modality(data, mod)
    uns = _check_fitted(adata, key)
    columns = {
        "cluster": f"{key}_cluster",
        "membership": f"{key}_membership",
        "response": f"{key}_response",
        "onset": f"{key}_onset",
        "peak_time": f"{key}_peak_time",
        "baseline": f"{key}_baseline",
        "amplitude": f"{key}_amplitude",
        "dynamic_score": f"{key}_dynamic_score",
        "dynamic_qval": f"{key}_dynamic_qval",
        "stability": f"{key}_stability",
        "selected": f"{key}_selected",
    }
    table = pd.DataFrame({"gene": adata.var_names.astype(str)})
    for name, col in columns.items():
        if col in adata.var:
            table[name] = adata.var[col].to_numpy()
    if curves:
        mean = np.asarray(adata.varm[f"{key}_mean"])
        for j, label in enumerate(str(v) for v in uns["time_labels"]):
            table[f"mean_{label}"] = mean[:, j]
    if selected_only:
        table = table.loc[table["selected"]].reset_index(drop=True)
    with atomic_output(path) as tmp:
        table.to_csv(tmp, index=False)
    logger.info("Wrote %d genes to %s", len(table), path)
    return table
