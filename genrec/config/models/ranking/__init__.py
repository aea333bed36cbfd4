"""Ranker configs (`genrec/models/ranking/X.py` has its config in `genrec/config/models/ranking/X.py`)."""
