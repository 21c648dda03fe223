"""Models built on scvi-tools base classes."""

from ._track_denoiser import TrackDenoiser
from ._vrnn import VRNN
from ._vrnn_module import VRNNModule

__all__ = ["VRNN", "TrackDenoiser", "VRNNModule"]
