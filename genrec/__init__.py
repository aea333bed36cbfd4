"""genrec: generative recommendation with honest, full-catalogue evaluation.

The Python API (`train`, `load_run`, `load_config`, `register`, `register_objective`, `register_task`) is
imported on first use, so that importing one part of the package (say `genrec.data`) does not import all of it.
"""

from genrec.version import __version__

_API = {"train": "genrec.api", "load_run": "genrec.api", "Run": "genrec.api", "load_config": "genrec.config",
        "register": "genrec.registry", "register_objective": "genrec.registry",
        "register_task": "genrec.registry"}  # fmt: skip

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'genrec' has no attribute {name!r}")
