"""Data quality: duplicates, bursts, bot users and random items are scored as noise; data.clean filters them."""

import numpy as np
import polars as pl
import pytest

from genrec.config import CleanConfig
from genrec.data import quality
from genrec.data.schema import Dataset


def dataset(rows):
    inter = pl.DataFrame(rows, schema=["user_id", "item_id", "timestamp"], orient="row").with_columns(
        pl.int_range(pl.len()).alias("position"), pl.lit(None, dtype=pl.Float32).alias("rating")
    )
    items = pl.DataFrame({"item_id": sorted(set(inter["item_id"].to_list()))})
    return Dataset("t", inter, items)


def community(seed=0, users=60, noise_user=None):
    """Two taste groups (items 1-10, 11-20); users read their group's items in order, a day apart."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        group = 10 * (u % 2)
        for t, i in enumerate(rng.permutation(10)[:8]):
            rows.append((u, group + int(i) + 1, 86400 * (t + 1) + u))
    return rows


def test_duplicates_bursts_and_bots_are_flagged():
    rows = community()
    rows.append((0, rows[0][1], rows[0][2]))  # exact duplicate of user 0's first event
    rows += [(999, 1 + k % 20, 1000 + k) for k in range(60)]  # a bot: 60 events in a minute, every item
    ev = quality.event_scores(dataset(rows), burst_seconds=60)
    assert ev.filter(pl.col("exact_duplicate"))["user_id"].to_list() == [0]
    bot = ev.filter(pl.col("user_id") == 999)
    assert bot["burst"].min() > 10 and ev.filter(pl.col("user_id") != 999)["burst"].max() <= 1
    users = quality.user_scores(ev)
    assert users.sort("bot", descending=True)["user_id"][0] == 999


def test_random_items_score_as_noise():
    rows = community(users=80)
    rows.append((0, 15, 86400 * 3 + 5))  # user 0 reads items 1-10; item 15 belongs to the other group
    rows.append((2, 17, 86400 * 5 + 5))
    ev = quality.event_scores(dataset(rows))
    noise = ev.sort("noise", descending=True)
    top = set(zip(noise["user_id"][:4].to_list(), noise["item_id"][:4].to_list()))
    assert {(0, 15), (2, 17)} <= top
    # An implausibility signal moves the score of the events it names.
    imp = np.zeros(ev.height)
    target = ev.with_row_index("r").filter((pl.col("user_id") == 5) & (pl.col("item_id") != 15))["r"][0]
    imp[target] = 50.0
    with_model = quality.event_scores(dataset(rows), implausibility=imp)
    assert with_model["noise"][target] > ev["noise"][target]


def test_clean_drops_the_asked_shares_and_keeps_the_newest_events():
    rows = community(users=40) + [(999, 1 + k % 20, 1000 + k) for k in range(60)]
    ds = dataset(rows)
    cfg = CleanConfig(drop_users=1 / 41, drop_events=0.1, keep_last=2)
    out = quality.clean(ds, cfg)
    users = out.interactions["user_id"].unique().to_list()
    assert 999 not in users and len(users) == 40
    before = ds.interactions.filter(pl.col("user_id") != 999)
    assert out.interactions.height == before.height - round(0.1 * (before.height - 2 * 40))
    for u in range(40):
        mine = before.filter(pl.col("user_id") == u).sort("timestamp")["item_id"].to_list()
        kept = out.interactions.filter(pl.col("user_id") == u).sort("timestamp")["item_id"].to_list()
        assert kept[-2:] == mine[-2:]
    assert any("bot score" in n for n in out.notes)
    assert quality.clean(ds, CleanConfig()) is ds


def test_sample_users_keeps_whole_users():
    ds = dataset(community(users=50))
    half = quality.sample_users(ds, 0.5, seed=1)
    counts = half.interactions.group_by("user_id").len()["len"]
    assert half.interactions["user_id"].n_unique() == 25 and (counts == 8).all()


def test_clean_config_rejects_bad_shares():
    with pytest.raises(ValueError):
        CleanConfig(drop_events=1.5)
