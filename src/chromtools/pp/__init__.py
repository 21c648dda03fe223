"""Preprocessing: from counts and fragments to the inputs of chromtools tools."""

from ._gene_activity import gene_activity, gene_table, gene_windows
from ._timecourse import timecourse_summary

__all__ = ["gene_activity", "gene_table", "gene_windows", "timecourse_summary"]
