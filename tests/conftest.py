import os
from pathlib import Path

import pytest

# Keep the Parquet cache of test runs out of the user's home.
os.environ.setdefault("GENREC_CACHE", str(Path(__file__).parent / ".cache"))


# 4 users over 6 items; each user's last event repeats its first item, so every test target is a history item.
REPEATS_CSV = """user_id,item_id,timestamp
1,1,100
1,2,101
1,3,102
1,1,103
2,2,100
2,3,101
2,4,102
2,2,103
3,3,100
3,4,101
3,5,102
3,3,103
4,4,100
4,5,101
4,6,102
4,4,103
"""


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


# Tiny data built once per test run and shared by every test that reads it (write nothing into these folders).


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory) -> Path:
    """A tiny random LLaMA with its tokenizer on disk (tests/tiny_llm.py), for the LLM-based models."""
    from tiny_llm import tiny_llama

    return tiny_llama(tmp_path_factory.mktemp("tiny_lm") / "lm")


@pytest.fixture(scope="session")
def tiny_sequences(tmp_path_factory) -> Path:
    """40 users over 20 items with titles and categories (P5 layout, no timestamps)."""
    rows = [[u] + [(u + j) % 20 + 1 for j in range(5 + u % 4)] for u in range(1, 41)]
    items = {i: f"Item {i} thing" for i in range(1, 21)}
    return write_p5(tmp_path_factory.mktemp("sequences") / "tiny", rows, items)


@pytest.fixture(scope="session")
def tiny_ratings(tmp_path_factory) -> Path:
    """A data folder (`data.data_dir`) whose `ml-100k` is the bundled ML-100K cut to its 40 users with the fewest
    ratings (808 ratings with timestamps of 273 movies, titles, genres, demographics): ranking runs in seconds."""
    import polars as pl

    source = Path(__file__).resolve().parents[1] / "genrec" / "data" / "bundled" / "ml-100k"
    folder = tmp_path_factory.mktemp("ratings") / "ml-100k"
    folder.mkdir()
    ratings = pl.read_csv(
        source / "u.data", separator="\t", has_header=False, new_columns=["u", "i", "r", "t"]
    )
    users = ratings.group_by("u").len().sort(["len", "u"]).head(40)["u"]
    ratings = ratings.filter(pl.col("u").is_in(users.implode()))
    ratings.write_csv(folder / "u.data", separator="\t", include_header=False)
    keep = {"u.item": set(ratings["i"].to_list()), "u.user": set(users.to_list())}
    for name, ids in keep.items():
        lines = (source / name).read_bytes().decode("latin-1").splitlines()
        rows = [line for line in lines if line and int(line.split("|")[0]) in ids]
        (folder / name).write_bytes(("\n".join(rows) + "\n").encode("latin-1"))
    return folder.parent
