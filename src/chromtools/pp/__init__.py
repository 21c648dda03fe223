"""Preprocessing: from counts and fragments to the inputs of chromtools tools."""

from ._lsi import lsi, tfidf_matrix

__all__ = ["lsi", "tfidf_matrix"]
