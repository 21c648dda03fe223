"""Simulated data with planted truth, and loaders for the real data sets."""

from ._real import (
    HscBulk,
    bmmc_multiome,
    cho1998_yeast,
    data_path,
    granja2019,
    hsc_bulk,
    hsmm_gene_annotation,
    hsmm_sciatac,
    kouno2013_thp1,
    pbmc_multiome,
    snareseq2019,
)
from ._scatac import simulate_scatac
from ._timecourse import TIMECOURSE_VARIANTS, module_curve, simulate_timecourse, simulate_timecourse_variant
from ._tracks import SimulatedTracks, simulate_fragments, simulate_tracks

__all__ = [
    "TIMECOURSE_VARIANTS",
    "HscBulk",
    "SimulatedTracks",
    "bmmc_multiome",
    "cho1998_yeast",
    "data_path",
    "granja2019",
    "hsc_bulk",
    "hsmm_gene_annotation",
    "hsmm_sciatac",
    "kouno2013_thp1",
    "module_curve",
    "pbmc_multiome",
    "simulate_fragments",
    "simulate_scatac",
    "simulate_timecourse",
    "simulate_timecourse_variant",
    "simulate_tracks",
    "snareseq2019",
]
