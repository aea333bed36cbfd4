"""Model configs, one file per model at the path of its model file (`genrec/models/X.py` has its config in
`genrec/config/models/X.py`): architecture keys only, no torch. `genrec.registry` names both classes."""
