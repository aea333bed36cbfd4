"""Preference alignment of a trained retrieval run: pair sources, a reward model from a ranking run, and
`align_run`, which writes the aligned model as a new run directory (docs/alignment.md)."""
