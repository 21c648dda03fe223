"""Models built on scvi-tools base classes."""

from ._track_denoiser import TrackDenoiser

__all__ = ["TrackDenoiser"]
