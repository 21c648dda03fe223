"""Input and output: bigWig tracks, BED/narrowPeak/bedGraph tables, fragments and peak matrices."""

from ._bigwig import BigWigReader, BigWigWriter, bigwig_mean, read_bigwig, read_window, runs_from_values, write_bigwig
from ._coverage import cut_site_runs, pseudobulk_coverage
from ._fragments import fragments_path, iter_fragments, parse_region, read_fragments, validate_fragments
from ._intervals import (
    NARROWPEAK_COLUMNS,
    read_bed,
    read_bedgraph,
    read_narrowpeak,
    read_peaks,
    validate_intervals,
    write_bed,
    write_bedgraph,
    write_narrowpeak,
)
from ._peak_names import add_peak_coordinates, parse_peak_names
from ._sizes import check_chrom_sizes, read_chrom_sizes, write_chrom_sizes

__all__ = [
    "NARROWPEAK_COLUMNS",
    "BigWigReader",
    "BigWigWriter",
    "add_peak_coordinates",
    "bigwig_mean",
    "check_chrom_sizes",
    "cut_site_runs",
    "fragments_path",
    "iter_fragments",
    "parse_peak_names",
    "parse_region",
    "pseudobulk_coverage",
    "read_bed",
    "read_bedgraph",
    "read_bigwig",
    "read_chrom_sizes",
    "read_fragments",
    "read_narrowpeak",
    "read_peaks",
    "read_window",
    "runs_from_values",
    "validate_fragments",
    "validate_intervals",
    "write_bed",
    "write_bedgraph",
    "write_bigwig",
    "write_chrom_sizes",
    "write_narrowpeak",
]
