"""The package version (one place; `genrec.__version__` and the protocol's code version read it)."""

__version__ = "0.1.0"
