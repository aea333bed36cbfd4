"""The preference task: align a trained retrieval run (`init_from`) on preference pairs with a DPO-family objective
against a frozen copy of it, trained by the Trainer like any run (so `--resume`, `--nproc` and checkpoint
selection on validation work), evaluated and served as a retrieval run (docs/alignment.md).

Every epoch is a round: its pairs (`genrec.alignment.pairs`) are built afresh from the training events and, for
self-play and reward-beams, from the model as it is when the epoch starts, with the epoch's seeded generator,
then shuffled into batches. Validation reports the select metric with the list metrics at K = 10 (liked
precision, disliked share, popular share and, with a reward model, reward), where beta, the lr and the number of
epochs are chosen; the weights of the best validation epoch are kept.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from genrec.alignment.pairs import (
    Pairs,
    UserSets,
    preference_batches,
    rating_anchors,
    rating_pairs,
    reward_beam_pairs,
    self_play_pairs,
    train_lengths,
)
from genrec.alignment.reward import RewardModel
from genrec.config.tasks import PreferenceSpec
from genrec.data.split import Split
from genrec.errors import ConfigError
from genrec.eval.evaluator import evaluate
from genrec.eval.lists import ListAccumulator, future_ratings
from genrec.runs.retrieval import RetrievalTask, list_context
from genrec.runs.run import load_run
from genrec.runs.task import item_table


class PreferenceTask(RetrievalTask):
    """Data: the aligned run's `Split` (in its item and user index) with the reward model, read by `load_data`;
    the pair sources' state (per-user item sets, the anchors) is built by `prepare`, before training."""

    spec = PreferenceSpec

    def load_data(self, like=None) -> Split:
        split = super().load_data(like)
        d = self.cfg.data
        self.reward_model = load_reward_model(d.reward_run, d.reward_diversity) if d.reward_run else None
        self.reward = None if self.reward_model is None else self.reward_model.bind(split.sequences)
        self.context = list_context(split, item_table(split.sequences.item_ids, self.dataset), self.reward)
        return split

    def prepare(self, model, split: Split, ctx, init=None) -> dict:
        """Checks that the model and the data can make pairs (one-line errors: no log-likelihood, no ratings, no
        liked event), builds what the pair sources reuse every epoch, and validates the weights training starts
        from (`reference_valid`)."""
        if not (model.can("log_likelihood") or model.can("session_log_likelihood")):
            raise ConfigError(
                f"{model.cfg.name} exposes no log-likelihood; a preference objective cannot train it"
            )
        d = self.cfg.data
        self.sets, self.anchors = None, 0
        if d.pairs != "reward-beams":
            self.anchors = len(rating_anchors(split, d)[0])
            self.sets = UserSets(split, d)
        summary = super().prepare(model, split, ctx, init)
        summary["reference_valid"] = self.validate(model, split, None)  # the weights training starts from
        if init is not None:
            summary["reference_training"] = init.metrics.get("training", {})
        return summary

    def batches(self, model) -> PairBatches:
        return PairBatches(self, model)

    def pairs(self, split: Split, model, rng: np.random.Generator) -> Pairs:
        """One epoch's preference pairs from the configured source."""
        d = self.cfg.data
        if d.pairs == "ratings":
            return rating_pairs(split, d, rng, self.sets)
        if d.pairs == "self-play":
            return self_play_pairs(split, d, model, rng, self.sets)
        return reward_beam_pairs(split, d, model, self.reward, rng)

    def validate(self, model, split: Split, progress) -> dict[str, float]:
        cfg = self.cfg.eval
        k = 10 if 10 in cfg.ks else max(cfg.ks)
        convention = "filtered" if cfg.exclude_history else "unfiltered"
        lists = ListAccumulator(self.context, future_ratings(split, "valid"), k)
        m = evaluate(
            model, split.valid, split.n_items, cfg, progress, (convention,), coverage=False, lists=lists
        )
        names = ["ndcg", "recall", "liked_precision", "disliked_share", "reward", "popular_share"]
        keys = [cfg.select_metric, *(f"{n}@{k}" for n in names)]
        return {key: float(m[convention][key]) for key in keys if key in m[convention]}

    def evaluate(self, model, split: Split, progress: bool = True, reward=None) -> dict:
        """As a retrieval run; `reward@10` with the run's reward model unless another `reward` is given."""
        return super().evaluate(model, split, progress, reward or self.reward_model)

    def checkpoint_selection(self, model) -> str:
        return (
            f"weights of the alignment epoch with the best validation {self.cfg.eval.select_metric} (every epoch "
            "trains on pairs built afresh), evaluated once on test"
        )

    def own_protocol(self, split: Split, model) -> dict:
        """What the aligned run's numbers depend on beyond a retrieval run's protocol."""
        d, train = self.cfg.data, self.cfg.train
        reward = self.reward_model
        return {
            "alignment": {
                "reference_run": str(Path(self.cfg.init_from).resolve()),
                "pair_source": d.pairs,
                "objective": train.objective.name,
                "beta": getattr(train.objective, "beta", None),
                "negatives": d.negatives,
                "sft_weight": getattr(train.objective, "sft_weight", None),
                "rounds": train.epochs,
                "epochs_per_round": 1,
                "lr": train.lr,
                "seed": train.seed,
                "reward_run": None if reward is None else str(reward.dir.resolve()),
                "reward": None
                if reward is None
                else f"mean like-probability of the list's items + {d.reward_diversity} x genre diversity",
                "pairs_from": "training events only (before the validation cut-off), built afresh every epoch",
            }
        }


class PairBatches:
    """The Trainer's batches for one epoch (`batches(split, rng, batch_size)`): that epoch's pairs, built from the
    model as it is then, in shuffled batches; `steps` counts them without building the pairs. `uses_model`: the
    Trainer builds them in its own process (`train.workers` would hold stale copies of the model)."""

    uses_model = True

    def __init__(self, task: PreferenceTask, model) -> None:
        self.task, self.model = task, model

    def steps(self, split: Split, batch_size: int) -> int:
        d = self.task.cfg.data
        if d.pairs == "reward-beams":
            pairs = min(d.users_per_round, int((train_lengths(split) >= 1).sum()))
        else:
            pairs = self.task.anchors
        return math.ceil(pairs / batch_size)

    def __call__(self, split: Split, rng: np.random.Generator, batch_size: int):
        pairs = self.task.pairs(split, self.model, rng)
        return preference_batches(split, pairs, batch_size, self.model.max_history, rng)


def load_reward_model(run_dir: str | Path, diversity: float = 0.0) -> RewardModel:
    """The reward model of a ranking run directory. Raises DataError (not a finished run) or ConfigError (not a
    ranking run, or a ranker it cannot use)."""
    return RewardModel(load_run(Path(run_dir)), diversity)
