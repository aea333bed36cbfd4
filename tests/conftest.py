import os
from pathlib import Path

import pytest

# Keep the Parquet cache of test runs out of the user's home.
os.environ.setdefault("GENREC_CACHE", str(Path(__file__).parent / ".cache"))


def write_p5(folder: Path, rows: list[list[int]], items: dict[int, str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sequential.txt").write_text("\n".join(" ".join(map(str, r)) for r in rows) + "\n")
    if items:
        import json

        lines = [
            json.dumps({"item_id": i, "title": t, "categories": [["Cat", t.split()[0]]]})
            for i, t in items.items()
        ]
        (folder / "items.jsonl").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture
def tiny_p5(tmp_path: Path) -> Path:
    """12 users over 8 items with a strong 'next item = previous + 1' pattern."""
    rows = []
    for u in range(1, 13):
        start = (u % 4) + 1
        rows.append([u] + [start + j for j in range(4 + u % 3)])
    return write_p5(tmp_path / "tiny", rows, {i: f"Item {i}" for i in range(1, 11)})
