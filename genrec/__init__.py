"""genrec: generative recommendation with honest, full-catalogue evaluation."""

__version__ = "0.1.0"
