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


def _log(path, rows):
    """A CSV of (user, item, timestamp) rows, for the configs' data path."""
    path.write_text("user_id,item_id,timestamp\n" + "".join(f"{u},{i},{t}\n" for u, i, t in rows))
    return str(path)


def _noisy_log(seed=0):
    rows = community(seed, users=60)
    rng = np.random.default_rng(seed + 1)
    # Random items inside sequences, and a bot, so that every signal has something to find.
    rows += [(u, int(rng.integers(1, 21)), 86400 * 4 + 7 + u) for u in range(0, 60, 3)]
    rows += [(999, 1 + k % 20, 86400 * 3 + k) for k in range(40)]
    return rows


def _heldout(rows, split):
    """The rows a split holds out for evaluation: each user's last two of at least three events
    (leave-one-out), or every event at or after the 0.8 quantile of all times (temporal)."""
    if split == "temporal":
        cut = int(np.quantile([t for _, _, t in rows], 0.8))
        return {r for r in rows if r[2] >= cut}
    by_user = {}
    for r in sorted(rows, key=lambda r: (r[0], r[2])):
        by_user.setdefault(r[0], []).append(r)
    return {r for events in by_user.values() if len(events) >= 3 for r in events[-2:]}


def _events(ds):
    return set(ds.interactions.select("user_id", "item_id", "timestamp").rows())


@pytest.mark.parametrize("split", ["leave_one_out", "temporal"])
def test_cleaning_never_sees_or_edits_evaluation_targets(tmp_path, split):
    """What cleaning drops is fitted on training events only: changing only the evaluation part (each user's last
    two events, or everything after the validation cut-off) leaves the dropped set as it was; the evaluation
    targets and a temporal split's cut-offs are the same with and without cleaning."""
    from genrec.config import DataConfig
    from genrec.runs import make_split, prepare_dataset

    rows = _noisy_log()
    held = _heldout(rows, split)
    rng = np.random.default_rng(7)
    changed = [(u, int(rng.integers(1, 21)) if (u, i, t) in held else i, t) for u, i, t in rows]
    assert sum(a != b for a, b in zip(rows, changed)) > 20  # many evaluation targets differ
    clean = CleanConfig(drop_users=0.02, drop_events=0.15, exact_duplicates=True)
    dropped, splits = [], []
    for name, data in (("a", rows), ("b", changed)):
        plain_cfg = DataConfig(dataset=_log(tmp_path / f"{name}.csv", data), split=split)
        cfg = plain_cfg.model_copy(update={"clean": clean})
        before, after = prepare_dataset(plain_cfg), prepare_dataset(cfg)
        dropped.append(_events(before) - _heldout(data, split) - _events(after))
        splits.append((make_split(before, plain_cfg), make_split(after, cfg), after))
    assert dropped[0] and dropped[0] == dropped[1]
    for plain, cleaned, after in splits:
        kept = np.isin(plain.sequences.user_ids[plain.test.users], after.interactions["user_id"].unique())
        targets = plain.sequences.item_ids[plain.test.targets - 1][kept]
        assert np.array_equal(cleaned.sequences.item_ids[cleaned.test.targets - 1], targets)
        if split == "temporal":
            assert cleaned.details["valid_cutoff"] == plain.details["valid_cutoff"]
            assert cleaned.details["test_cutoff"] == plain.details["test_cutoff"]
