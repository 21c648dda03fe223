"""Preprocessing: from counts and fragments to the inputs of chromtools tools."""

from ._pairs import TrainingPair, training_pair

__all__ = ["TrainingPair", "training_pair"]
