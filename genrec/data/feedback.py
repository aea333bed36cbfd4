"""Explicit feedback for ranking: histories of (item, rating), labelled impressions, side features.

Every rated item is an impression whose label is `like = rating >= like_threshold`. The feedback scale (lowest
and highest rating) is read from the data or given, never clipped (`FeedbackScale`); the threshold defaults to
the lowest rating in the top quarter of the scale. Two global time cut-offs
(quantiles of all timestamps) split the impressions, so nothing later than a cut-off is ever used to predict
something before it:
- train: impressions before the validation cut; each one's history is the user's earlier events (the model
  may read any earlier (item, rating) pair, as a production log would);
- valid: impressions in [valid cut, test cut); history = the user's events before the validation cut;
- test: impressions at or after the test cut; history = the user's events before the test cut.
A user with no event before the cut has no history there (a cold user) and is not evaluated; the count is kept.

The time a model sees for a candidate (`cand_times`) is either the impression's own time or, with
`candidate_time="last_event"`, the time of the last event in its history. Why the option: a training
impression follows its previous event by a median 0 s (ratings come in bursts), while an evaluation
impression lies anywhere in the weeks after its cut-off (median ~30 days after the user's last event), so a
model reading time gaps meets gaps in evaluation that training hardly showed it.

Side features: user demographics (gender, age bucket, occupation), item genres and release-year bucket, and
the item text (title + genres) for models that embed it. `cross_features` adds features computed from the
history only (the user's like rate, and like rate / share of history within the candidate's genres).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from genrec.data.schema import Dataset, OfSequences, Sequences
from genrec.errors import DataError

N_ACTIONS = 5  # ratings become action ids 1..5 (`FeedbackScale.actions`; 4 and 5 = liked); 0 is padding
AGE_BUCKETS = [1, 18, 25, 35, 45, 50, 56]  # ML-1M's age codes; raw ages (ML-100K) are mapped onto them
CROSS_FEATURES = ["log_history", "like_rate", "mean_rating", "genre_share", "genre_like_rate", "genre_rating"]


@dataclass(frozen=True)
class FeedbackScale:
    """The range of a feedback signal and where a like starts.

    `low` / `high`: the lowest and highest rating (from the data, or `data.rating_scale`); `like_threshold`: like
    = rating >= it (from `data.like_threshold`, else the lowest observed rating at or above low + 3/4 (high -
    low): 1-5 -> 4, 0/1 -> 1, -1/+1 -> 1, 1-10 -> 8). `source` says where low / high came from."""

    low: float
    high: float
    like_threshold: float
    source: str = "data"

    @property
    def name(self) -> str:
        if (self.low, self.high) == (0.0, 1.0):
            return "binary 0/1"
        if (self.low, self.high) == (-1.0, 1.0):
            return "signed -1/+1"
        return f"{self.low:g} to {self.high:g}"

    def labels(self, ratings: np.ndarray) -> np.ndarray:
        """float32 0/1: like = rating >= like_threshold."""
        return (ratings >= self.like_threshold).astype(np.float32)

    def actions(self, ratings: np.ndarray) -> np.ndarray:
        """int64 action ids 1..N_ACTIONS: dislikes spread linearly over 1..3 from `low` up to the threshold, likes
        over 4..5 from the threshold up to `high` (on 1-5 with threshold 4 the action is the rating itself; 0/1
        gives 1 and 5). Models read actions >= 4 as liked, so an action never disagrees with its label."""
        r = np.asarray(ratings, dtype=np.float64)
        theta = self.like_threshold
        below = 1 + np.floor(3 * (r - self.low) / max(theta - self.low, 1e-12))
        above = (
            4 + np.floor(2 * (r - theta) / (self.high - theta)) if self.high > theta else np.full_like(r, 5)
        )
        return np.where(r >= theta, np.clip(above, 4, 5), np.clip(below, 1, 3)).astype(np.int64)

    def describe(self) -> str:
        return f"like = rating >= {self.like_threshold:g} on a {self.name} scale (from the {self.source})"


def feedback_scale(
    ratings: np.ndarray,
    where: str,
    scale: tuple[float, float] | None = None,
    like_threshold: float | None = None,
) -> FeedbackScale:
    """The `FeedbackScale` of `ratings` (finite numbers). `scale` fixes [low, high] (ratings outside it are a
    DataError, never clipped); without it the data's range is the scale. Raises DataError when every rating is
    the same value or a given threshold lies outside the scale."""
    values = np.unique(np.asarray(ratings, dtype=np.float64))
    if scale is not None:
        low, high = float(scale[0]), float(scale[1])
        outside = values[(values < low) | (values > high)]
        if len(outside):
            raise DataError(
                f"{where}: rating {outside[0]:g} lies outside data.rating_scale [{low:g}, {high:g}]; widen the "
                "scale or fix the ratings"
            )
    else:
        low, high = float(values[0]), float(values[-1])
        if low == high:
            raise DataError(
                f"{where}: every rating is {low:g}; a ranker needs likes and dislikes (give ratings of more than one "
                "value, or set data.rating_scale and data.like_threshold)"
            )
    if like_threshold is None:
        top = values[values >= low + 0.75 * (high - low)]
        theta = float(top[0]) if len(top) else high
    else:
        theta = float(like_threshold)
        if not low < theta <= high:
            raise DataError(
                f"{where}: data.like_threshold={theta:g} makes every rating on the {low:g} to {high:g} scale a "
                f"{'like' if theta <= low else 'dislike'}; set it above {low:g} and at most {high:g}"
            )
    return FeedbackScale(low, high, theta, "config" if scale is not None else "data")


@dataclass
class SideFeatures:
    user_cats: np.ndarray  # [n_users, 3] gender, age bucket, occupation (0 = unknown)
    user_vocab: list[int]  # vocabulary size (incl. 0) of each user column
    item_genres: np.ndarray  # [n_items + 1, G] genre ids (0 = none), row 0 = padding item
    n_genres: int
    item_year: np.ndarray  # [n_items + 1] release-year bucket (0 = unknown)
    n_years: int
    item_text: list[str]  # [n_items] "title | genres" for the text encoder (item i is item_text[i - 1])


@dataclass
class Impressions:
    """Labelled impressions; the history of impression n is seq events [user start, hist_end[n])."""

    users: np.ndarray
    items: np.ndarray
    actions: np.ndarray
    labels: np.ndarray  # float32 0/1
    times: np.ndarray  # when the impression happened (defines the split)
    hist_end: np.ndarray  # flat event index (exclusive) where the impression's history ends
    cand_times: np.ndarray  # the candidate's time as models see it (see the module docstring)

    def __len__(self) -> int:
        return len(self.users)

    def take(self, idx: np.ndarray) -> Impressions:
        return Impressions(*(getattr(self, f)[idx] for f in self.__dataclass_fields__))


@dataclass
class FeedbackData(OfSequences):
    sequences: Sequences  # chronological events per user (CSR)
    actions: np.ndarray  # action id of every event (`FeedbackScale.actions`, 1..5)
    labels: np.ndarray  # like label of every event
    train_end: np.ndarray  # [n_users] flat index: events before it (per user, from its start) are training
    features: SideFeatures
    train: Impressions
    valid: Impressions
    test: Impressions
    details: dict
    scale: FeedbackScale | None = None  # how ratings became labels and actions

    def user_start(self, users: np.ndarray) -> np.ndarray:
        return self.sequences.offsets[users]

    def cross_features(self, users: np.ndarray, items: np.ndarray, hist_end: np.ndarray) -> np.ndarray:
        """[n, len(CROSS_FEATURES)] from each impression's history only (no label of the impression itself)."""
        start = self.sequences.offsets[users]
        n = (hist_end - start).astype(np.float32)
        likes = self._cum_like[hist_end] - self._cum_like[start]
        rating = self._cum_rating[hist_end] - self._cum_rating[start]
        genres = self.features.item_genres[items]  # [n, G]
        has = genres > 0
        g_cnt = np.take_along_axis(self._cum_genre[hist_end] - self._cum_genre[start], genres, 1) * has
        g_like = np.take_along_axis(self._cum_genre_like[hist_end] - self._cum_genre_like[start], genres, 1)
        g_rating = np.take_along_axis(
            self._cum_genre_rating[hist_end] - self._cum_genre_rating[start], genres, 1
        )
        n_g = np.maximum(has.sum(1), 1)
        cnt = g_cnt.sum(1)
        out = np.stack(
            [
                np.log1p(n) / 6.0,
                (likes + 1) / (n + 2),
                (rating + 3.5) / (n + 1) / 5.0,  # shrunk to the global-ish mean 3.5 for short histories
                cnt / n_g / np.maximum(n, 1),
                ((g_like * has).sum(1) + 1) / (cnt + 2),
                ((g_rating * has).sum(1) + 3.5) / (cnt + 1) / 5.0,
            ],
            axis=1,
        )
        return out.astype(np.float32)

    def _build_cumulative(self) -> None:
        """Prefix sums over the flat event array (exclusive), so any history's counts are two lookups."""
        n_ev = len(self.sequences.items)
        ratings = self.actions.astype(np.float32)

        def cum(values: np.ndarray) -> np.ndarray:
            out = np.zeros((n_ev + 1,) + values.shape[1:], dtype=np.float32)
            np.cumsum(values, axis=0, out=out[1:])
            return out

        self._cum_like = cum(self.labels)
        self._cum_rating = cum(ratings)
        g = self.features.n_genres + 1
        onehot = np.zeros((n_ev, g), dtype=np.float32)
        ev_genres = self.features.item_genres[self.sequences.items]
        rows = np.repeat(np.arange(n_ev), ev_genres.shape[1])
        onehot[rows, ev_genres.ravel()] = 1.0
        onehot[:, 0] = 0.0
        self._cum_genre = cum(onehot)
        self._cum_genre_like = cum(onehot * self.labels[:, None])
        self._cum_genre_rating = cum(onehot * ratings[:, None])


def _year_bucket(title: str | None, release: str | None) -> int:
    """5-year buckets of the release year, from "Title (1995)" or a release date ending in the year."""
    m = re.search(r"\((\d{4})\)\s*$", title or "") or re.search(r"(\d{4})$", release or "")
    if not m:
        return 0
    return int(np.clip((int(m.group(1)) - 1915) // 5, 0, 18)) + 1


def _categorical(values: list, vocab: dict | None = None) -> tuple[np.ndarray, int]:
    if vocab is None:
        vocab = {v: i + 1 for i, v in enumerate(sorted({v for v in values if v is not None}, key=str))}
    return np.array([vocab.get(v, 0) for v in values], dtype=np.int64), len(vocab) + 1


def _check_both_classes(name: str, scale: FeedbackScale, parts: dict[str, Impressions]) -> None:
    """DataError (one line, naming data.like_threshold) when a part's impressions are all likes or all dislikes:
    a ranker trained or selected on one class learns nothing, and AUC is undefined."""
    for part, imps in parts.items():
        rate = float(imps.labels.mean())
        if rate in (0.0, 1.0):
            kind = "likes" if rate == 1.0 else "dislikes"
            raise DataError(
                f"{name}: every {part} impression is one of the {kind} ({scale.describe()}); set "
                f"data.like_threshold to a rating between {scale.low:g} and {scale.high:g} that splits them"
            )


def side_features(ds: Dataset, seq: Sequences) -> SideFeatures:
    items = (
        seq.item_map.to_series("item_id")
        .to_frame()
        .join(ds.items, on="item_id", how="left", maintain_order="left")
    )
    cats = items["categories"].to_list()
    genre_vocab = {g: i + 1 for i, g in enumerate(sorted({g for c in cats if c for g in c}))}
    width = max(1, max((len(c) for c in cats if c), default=1))
    genres = np.zeros((seq.n_items + 1, width), dtype=np.int64)
    for i, c in enumerate(cats, start=1):
        for j, g in enumerate(c or []):
            genres[i, j] = genre_vocab[g]
    titles = items["title"].to_list()
    release = items["release_date"].to_list() if "release_date" in items.columns else [None] * len(titles)
    year = np.zeros(seq.n_items + 1, dtype=np.int64)
    year[1:] = [_year_bucket(t, r) for t, r in zip(titles, release)]
    text = [f"{t or f'item {iid}'} | {', '.join(c or [])}" for iid, t, c in zip(seq.item_ids, titles, cats)]
    user_cats = np.zeros((seq.n_users, 3), dtype=np.int64)
    vocab = [1, 1, 1]
    if ds.users is not None:
        users = (
            seq.user_map.to_series("user_id")
            .to_frame()
            .join(ds.users, on="user_id", how="left", maintain_order="left")
        )
        if "gender" in users.columns:
            user_cats[:, 0], vocab[0] = _categorical(users["gender"].to_list())
        if "age" in users.columns:
            ages = users["age"].to_list()
            bucket = [None if a is None else int(np.searchsorted(AGE_BUCKETS, a, side="right")) for a in ages]
            user_cats[:, 1] = [0 if b is None else b for b in bucket]
            vocab[1] = len(AGE_BUCKETS) + 1
        if "occupation" in users.columns:
            user_cats[:, 2], vocab[2] = _categorical(users["occupation"].to_list())
    return SideFeatures(user_cats, vocab, genres, len(genre_vocab), year, 20, text)


def build_feedback(
    ds: Dataset,
    valid_quantile: float = 0.8,
    test_quantile: float = 0.9,
    like_threshold: float | None = None,
    candidate_time: str = "impression",
    rating_scale: tuple[float, float] | None = None,
) -> FeedbackData:
    """Labelled impressions of `ds` split by time (module docstring). The scale and the like threshold come from
    `rating_scale` / `like_threshold` or the data (`feedback_scale`). Raises DataError (one line) for data
    without ratings or times, events without a rating, and a split whose train, valid or test impressions hold
    one class only (naming `data.like_threshold`)."""
    seq = ds.encode()
    if seq.ratings is None or np.isnan(seq.ratings).all():
        raise DataError(f"{ds.name}: ranking needs explicit ratings (the data has none)")
    missing = int(np.isnan(seq.ratings).sum())
    if missing:
        raise DataError(
            f"{ds.name}: {missing} of {len(seq.ratings)} events have no rating; a ranker needs one on every event "
            "(--set data.unreadable_ratings=drop drops such rows of a CSV / Parquet file)"
        )
    if seq.timestamps is None or (seq.timestamps < 0).any():
        raise DataError(f"{ds.name}: ranking needs a timestamp on every interaction (drop unordered users)")
    if not 0 < valid_quantile < test_quantile < 1:
        raise DataError("ranking split needs 0 < valid_quantile < test_quantile < 1")
    if candidate_time not in ("impression", "last_event"):
        raise DataError(f"candidate_time must be 'impression' or 'last_event', got {candidate_time!r}")
    scale = feedback_scale(seq.ratings, ds.name, rating_scale, like_threshold)
    actions, labels = scale.actions(seq.ratings), scale.labels(seq.ratings)
    cut_valid, cut_test = np.quantile(seq.timestamps, [valid_quantile, test_quantile]).astype(np.int64)
    lengths = seq.lengths()
    user_of = np.repeat(np.arange(seq.n_users), lengths)
    start = seq.offsets[:-1]
    before_valid = np.bincount(user_of, weights=seq.timestamps < cut_valid, minlength=seq.n_users).astype(
        np.int64
    )
    before_test = np.bincount(user_of, weights=seq.timestamps < cut_test, minlength=seq.n_users).astype(
        np.int64
    )
    ev = np.arange(len(seq.items))
    t = seq.timestamps

    def impressions(mask: np.ndarray, hist_end: np.ndarray) -> Impressions:
        idx = ev[mask]
        end = hist_end[mask].astype(np.int64)
        cand_t = t[idx] if candidate_time == "impression" else t[end - 1]  # every impression has a history
        return Impressions(user_of[idx], seq.items[idx], actions[idx], labels[idx], t[idx], end, cand_t)

    pos_in_user = ev - start[user_of]
    # Training impressions need at least one earlier event; their history is every earlier event.
    train_mask = (t < cut_valid) & (pos_in_user >= 1)
    valid_mask = (t >= cut_valid) & (t < cut_test) & (before_valid[user_of] > 0)
    test_mask = (t >= cut_test) & (before_test[user_of] > 0)
    train = impressions(train_mask, ev)
    valid = impressions(valid_mask, start[user_of] + before_valid[user_of])
    test = impressions(test_mask, start[user_of] + before_test[user_of])
    if len(test) == 0 or len(valid) == 0:
        raise DataError(
            f"{ds.name}: no impressions after the time cut-offs (valid {len(valid)}, test {len(test)})"
        )
    _check_both_classes(ds.name, scale, {"train": train, "valid": valid, "test": test})
    features = side_features(ds, seq)
    details = {
        "split": "temporal (ranking)",
        "rule": "global time cut-offs at quantiles of all timestamps; train impressions before the first "
        "(history = the user's earlier events); valid impressions in [cut1, cut2) and test impressions after "
        "cut2, each predicted from the user's events before its cut-off; users without earlier events are "
        "not evaluated",
        "label": scale.describe(),
        "scale": {"low": scale.low, "high": scale.high, "like_threshold": scale.like_threshold},
        "candidate_time": "the impression's own time"
        if candidate_time == "impression"
        else "the time of the last event in the impression's history (the user's last event before the "
        "cut-off in evaluation; training candidates keep their own time, a median 0 s after that event)",
        "valid_cutoff": int(cut_valid),
        "test_cutoff": int(cut_test),
        "valid_quantile": valid_quantile,
        "test_quantile": test_quantile,
        "impressions": {"train": len(train), "valid": len(valid), "test": len(test)},
        "users": {
            "valid": int(len(np.unique(valid.users))),
            "test": int(len(np.unique(test.users))),
            "cold_not_evaluated_valid": int(((before_valid == 0) & (before_test > 0)).sum()),
            "cold_not_evaluated_test": int(((before_test == 0) & (lengths > before_test)).sum()),
        },
        "positive_rate": {
            "train": round(float(train.labels.mean()), 4),
            "valid": round(float(valid.labels.mean()), 4),
            "test": round(float(test.labels.mean()), 4),
        },
    }
    data = FeedbackData(
        seq, actions, labels, start + before_valid, features, train, valid, test, details, scale
    )
    data._build_cumulative()
    return data
