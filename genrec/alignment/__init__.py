"""Preference alignment's parts: pair sources built from a retrieval split (`pairs`) and a reward model from a
ranking run (`reward`). The preference task (`genrec.runs.preference`) trains on them (docs/alignment.md)."""
