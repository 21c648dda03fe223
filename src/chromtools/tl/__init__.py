"""Tools: denoising, temporal clustering and reference mapping on AnnData/MuData."""

__all__: list[str] = []
