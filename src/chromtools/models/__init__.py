"""Models built on scvi-tools base classes."""

__all__: list[str] = []
