"""HTTP serving: `create_app(run_dir)` builds the FastAPI app (JSON API + demo page)."""

from genrec.serve.app import create_app

__all__ = ["create_app"]
