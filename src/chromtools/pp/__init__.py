"""Preprocessing: from counts and fragments to the inputs of chromtools tools."""

__all__: list[str] = []
