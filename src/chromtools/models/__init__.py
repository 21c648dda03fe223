"""Models built on scvi-tools base classes."""

from ._vrnn import VRNN
from ._vrnn_module import VRNNModule

__all__ = ["VRNN", "VRNNModule"]
