"""Inference: top-K retrieval (`retrieval`: exact, FAISS), the incremental HSTU cache (`kv_cache`) and the
serving engine (`engine`). Modules are imported by name; this package imports nothing, so that any of them can
be used without the others."""
