"""Loaders for the real data sets used in tests, benchmarks and tutorials.

None of the data ships with chromtools: each loader reads a folder that the caller points to
(``data_dir``, or the environment variable ``CHROMTOOLS_DATA``), laid out as in the project's
shared data folder, and fails with a clear message when a file is missing.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from chromtools._utils import PathLike
from chromtools.io import add_peak_coordinates, parse_peak_names

ENV_VAR = "CHROMTOOLS_DATA"


def data_path(folder: str, data_dir: PathLike | None = None) -> Path:
    """Folder ``folder`` inside the data root, checked to exist.

    Parameters
    ----------
    folder
        Sub-folder, e.g. ``'atac_hsc_bulk'``.
    data_dir
        Data root; default the environment variable ``CHROMTOOLS_DATA``.
    """
    if data_dir is None:
        data_dir = os.environ.get(ENV_VAR)
        if data_dir is None:
            msg = (
                f"No data folder given: pass data_dir='/path/to/data' (the folder holding '{folder}/') "
                f"or set the environment variable {ENV_VAR}."
            )
            raise FileNotFoundError(msg)
    path = Path(data_dir) / folder
    if not path.is_dir():
        msg = f"Data folder '{path}' does not exist; pass the data root that holds '{folder}/' as data_dir."
        raise FileNotFoundError(msg)
    return path


def _file(folder: Path, name: str) -> Path:
    path = folder / name
    if not path.exists():
        msg = f"Expected data file '{path}' is missing; restore it from the data set's source."
        raise FileNotFoundError(msg)
    return path


@dataclass(frozen=True)
class HscBulk:
    """Paths of the bulk HSC ATAC set (hg19, first 10 Mb of chr1 and chr2).

    Attributes
    ----------
    noisy
        Coverage of 5M reads.
    clean
        Coverage of 80M reads.
    peaks
        MACS peaks called on the clean track: the labels.
    noisy_peaks
        MACS peaks called on the noisy track: the classical baseline.
    chrom_sizes
        Sizes of the covered span (10 Mb per chromosome).
    """

    noisy: Path
    clean: Path
    peaks: Path
    noisy_peaks: Path
    chrom_sizes: Path


def hsc_bulk(data_dir: PathLike | None = None) -> HscBulk:
    """Bulk ATAC-seq of human HSCs from the AtacWorks test fixtures (noisy 5M vs clean 80M reads).

    Test data only (NVIDIA Source Code License); never bundle it.
    """
    folder = data_path("atac_hsc_bulk", data_dir)
    return HscBulk(
        noisy=_file(folder, "HSC.5M.chr1-2.coverage.bw"),
        clean=_file(folder, "HSC.80M.chr1-2.coverage.bw"),
        peaks=_file(folder, "HSC.80M.chr1-2.peaks.bed"),
        noisy_peaks=_file(folder, "HSC.5M.chr1-2.peaks.bed"),
        chrom_sizes=_file(folder, "chrom.sizes"),
    )


def _read_h5ad(path: Path) -> AnnData:
    import anndata as ad

    with warnings.catch_warnings():
        # Files written by older anndata versions read fine; their format notice is noise here.
        warnings.simplefilter("ignore", ad.OldFormatWarning)
        return ad.read_h5ad(path)


def granja2019(data_dir: PathLike | None = None) -> AnnData:
    """Granja et al. 2019 bone-marrow scATAC: 14,125 cells × 10,000 peaks (hg19), two donors.

    Raw counts in ``X``; ``obs['cell_type']`` (16), ``obs['cell_type_coarse']`` (10),
    ``obs['batch']`` (``BMMC_D5T1``, ``BMMC_D6T1``). The source's 1-based closed peak coordinates
    are converted to 0-based half-open ``var`` chrom/start/end.
    """
    adata = _read_h5ad(_file(data_path("scatac_labelled", data_dir), "granja2019_bmmc_10kpeaks.h5ad"))
    adata.var["start"] = adata.var["start"].astype(np.int64) - 1
    adata.var["end"] = adata.var["end"].astype(np.int64)
    adata.var["chrom"] = adata.var["chrom"].astype("category")
    return adata


def snareseq2019(data_dir: PathLike | None = None) -> AnnData:
    """SNARE-seq adult mouse cortex chromatin: 10,309 cells × 25,734 regions (mm10), 12 libraries.

    Very sparse (median 82 regions per cell); ``obs['cell_type']`` (15), ``obs['cell_type_fine']``
    (23), ``obs['batch']`` (12 libraries).
    """
    adata = _read_h5ad(_file(data_path("scatac_labelled", data_dir), "snareseq2019_mouse_cortex_25kregions.h5ad"))
    adata.var["chrom"] = adata.var["chrom"].astype("category")
    return adata


def bmmc_multiome(data_dir: PathLike | None = None):
    """NeurIPS 2021 bone-marrow 10x Multiome, 500 paired cells: MuData with ``'rna'`` and ``'atac'``.

    Raw counts in each modality's ``layers['counts']``; ``obs['batch']`` (s1d1, s1d2) and
    ``obs['cell_type']`` (21) in both modalities and in the MuData ``obs``; ATAC ``var``
    chrom/start/end parsed from the peak names.
    """
    from mudata import MuData

    folder = data_path("bmmc_multiome_small", data_dir)
    rna = _read_h5ad(_file(folder, "bmmc_multiome_starter_rna.h5ad"))
    atac = _read_h5ad(_file(folder, "bmmc_multiome_starter_atac.h5ad"))
    for mod in (rna, atac):
        mod.X = sp.csr_matrix(mod.X)
        mod.layers["counts"] = sp.csr_matrix(mod.layers["counts"])
    add_peak_coordinates(atac)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*update\\(\\) will not pull obs/var columns.*")
        mdata = MuData({"rna": rna, "atac": atac})
    for col in ("batch", "cell_type"):
        mdata.obs[col] = rna.obs[col].astype("category").to_numpy()
    return mdata


def pbmc_multiome(data_dir: PathLike | None = None):
    """10x PBMC Multiome test set from muon: 1,000 cells, with its tabix-indexed fragments file.

    The fragments path in ``mod['atac'].uns['files']['fragments']`` is re-pointed to the file
    in ``data_dir``; ATAC ``var`` chrom/start/end are parsed from the peak names.
    """
    import anndata as ad
    import mudata as md

    folder = data_path("pbmc10x_multiome_muon", data_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ad.OldFormatWarning)
        warnings.filterwarnings("ignore", message=".*Cannot join columns with the same name.*")
        warnings.filterwarnings("ignore", message=".*was not created by muon/mudata.*")
        warnings.filterwarnings("ignore", message=".*update\\(\\) will not pull obs/var columns.*")
        mdata = md.read_h5mu(_file(folder, "test_rna_atac.h5mu"))
    frags = _file(folder, "test_rna_atac_fragments.tsv.gz")
    mdata.mod["atac"].uns["files"] = {"fragments": str(frags.resolve())}
    add_peak_coordinates(mdata, mod="atac")
    return mdata


def hsmm_sciatac(data_dir: PathLike | None = None, *, hours: tuple[float, ...] = (0, 24, 48, 72)) -> AnnData:
    """sci-ATAC-seq of differentiating human skeletal muscle myoblasts (Cicero): 200 cells × chr18 peaks.

    Parameters
    ----------
    data_dir
        Data root.
    hours
        Hours assigned to the time labels T0-T3 (the paper sampled at 0/24/48/72 h; the package
        documents the labels only as collection times).

    Returns
    -------
    AnnData of raw counts (cells × peaks) with ``obs['time_point']`` (T0-T3), ``obs['time']``
    (hours) and ``var`` chrom/start/end parsed from the peak names.
    """
    folder = data_path("timecourse/hsmm_sciatac_cicero", data_dir)
    long = pd.read_csv(_file(folder, "cicero_data_long.csv.gz"))
    cells = pd.read_csv(_file(folder, "cell_data.csv")).set_index("cell")
    peak_codes, peaks = pd.factorize(long["Peak"], sort=True)
    cell_index = pd.Index(cells.index)
    cell_codes = cell_index.get_indexer(long["Cell"])
    if (cell_codes < 0).any():
        msg = f"{int((cell_codes < 0).sum())} count rows name cells absent from cell_data.csv; the files do not match."
        raise ValueError(msg)
    X = sp.csr_matrix(
        (long["Count"].to_numpy(np.float32), (cell_codes, peak_codes)), shape=(cell_index.size, peaks.size)
    )
    labels = sorted(cells["timepoint"].unique())
    if len(labels) != len(hours):
        msg = f"Found time labels {labels} but {len(hours)} hours were given; pass hours= with one value per label."
        raise ValueError(msg)
    to_hours = dict(zip(labels, hours, strict=True))
    obs = pd.DataFrame(
        {
            "time_point": pd.Categorical(cells["timepoint"], categories=labels, ordered=True),
            "time": cells["timepoint"].map(to_hours).astype(float).to_numpy(),
        },
        index=cell_index,
    )
    var = parse_peak_names(peaks)
    adata = AnnData(X=X, obs=obs, var=var)
    adata.layers["counts"] = X.copy()
    return adata


def hsmm_gene_annotation(data_dir: PathLike | None = None) -> pd.DataFrame:
    """hg19 chr18 exon annotation shipped with the HSMM set (Gencode), one row per exon.

    Columns chrom, start, end (0-based half-open), strand, feature, gene, transcript, symbol.
    """
    folder = data_path("timecourse/hsmm_sciatac_cicero", data_dir)
    df = pd.read_csv(_file(folder, "gene_annotation_sample_chr18_hg19.csv"))
    df = df.rename(columns={"chromosome": "chrom"})
    df["start"] = df["start"].astype(np.int64) - 1  # GRanges export: 1-based closed
    return df


def kouno2013_thp1(data_dir: PathLike | None = None) -> AnnData:
    """THP-1 monocytes differentiating into macrophages after PMA (Kouno et al. 2013).

    Single-cell qPCR of 45 transcription factors in 960 cells, 8 time points (0-96 h).

    Returns
    -------
    AnnData (cells × genes) of log expression with ``obs['time']`` (hours) and
    ``obs['time_point']`` (ordered categorical).
    """
    folder = data_path("timecourse/kouno2013_thp1_pma", data_dir)
    expr = pd.read_csv(_file(folder, "kouno_expr_genes_x_cells.csv"), index_col=0)
    meta = pd.read_csv(_file(folder, "kouno_cell_meta.csv")).set_index("cell")
    meta = meta.loc[expr.columns]
    order = meta.drop_duplicates("capture").sort_values("obstime")["capture"].tolist()
    obs = pd.DataFrame(
        {
            "time": meta["obstime"].astype(float).to_numpy(),
            "time_point": pd.Categorical(meta["capture"], categories=order, ordered=True),
        },
        index=pd.Index(expr.columns.astype(str)),
    )
    return AnnData(X=expr.T.to_numpy(np.float32), obs=obs, var=pd.DataFrame(index=expr.index.astype(str)))


def cho1998_yeast(data_dir: PathLike | None = None, *, labelled: bool = True) -> AnnData:
    """Yeast cell cycle time course (Cho et al. 1998): 17 time points, every 10 min.

    Parameters
    ----------
    data_dir
        Data root.
    labelled
        ``True``: the 384 genes with a known phase class 1-5 (standardised profiles),
        in ``var['phase_class']``. ``False``: the 2,951 unlabelled genes of the Mfuzz table.

    Returns
    -------
    AnnData with one observation per time point (bulk samples) × genes, ``obs['time']`` in minutes.
    """
    folder = data_path("timecourse/cho1998_yeast_cellcycle", data_dir)
    times = np.arange(0, 170, 10, dtype=float)
    if labelled:
        df = pd.read_csv(_file(folder, "bgmm_CellCycle_384genes_x_17tp_with_class.csv")).set_index("gene")
        values = df.drop(columns="phase_class").to_numpy(np.float32)
        var = pd.DataFrame({"phase_class": pd.Categorical(df["phase_class"].astype(str))}, index=df.index.astype(str))
    else:
        df = pd.read_csv(_file(folder, "mfuzz_yeast.table.txt"), sep="\t", index_col=0)
        times = df.loc["TIME"].to_numpy(float)
        df = df.drop(index="TIME")
        values = df.to_numpy(np.float32)
        var = pd.DataFrame(index=df.index.astype(str))
    obs = pd.DataFrame({"time": times}, index=pd.Index([f"t{int(t)}min" for t in times]))
    return AnnData(X=values.T.copy(), obs=obs, var=var)
