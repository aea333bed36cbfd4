"""`align_run`: preference-align a trained retrieval run and write the result as a new run directory.

The aligned run has the layout of any run (`genrec.runs.store`): the reference run's config.yaml, items,
users and model files, the aligned weights in model.safetensors, `align.yaml` (the `align` section used) and
metrics.json, whose protocol names the reference run, the pair source, the objective, beta, the rounds and the
seed. It loads, evaluates and serves like any run (`load_run`, `genrec evaluate`, `genrec serve`).

The loop: for each of `rounds` rounds, build the pairs (self-play and reward-beams from the model as it is
then), run `epochs` passes of DPO / S-DPO over them against the frozen reference run's model, validate. The
weights after the last round are kept (no selection on test; beta, rounds and epochs are chosen on validation).
"""

from __future__ import annotations

import copy
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from genrec.alignment.config import AlignConfig
from genrec.alignment.pairs import (
    UserSets,
    preference_batches,
    rating_pairs,
    reward_beam_pairs,
    self_play_pairs,
)
from genrec.alignment.reward import load_reward_model
from genrec.config import TrainConfig
from genrec.errors import ConfigError
from genrec.eval.evaluator import evaluate, evaluate_split
from genrec.eval.lists import ListAccumulator, future_ratings
from genrec.io import check_out_dir, write_json, write_text
from genrec.objectives import build_objective
from genrec.progress import make_progress
from genrec.runs import load_run
from genrec.runs.retrieval import list_context, make_split, prepare_dataset, retrieval_protocol
from genrec.runs.store import MODEL_FILE
from genrec.training.checkpoint import save_weights
from genrec.training.trainer import build_optimizer, training_step

ALIGN_FILE = "align.yaml"
# Files of the reference run that describe the trained model's evaluation, not the aligned one.
NOT_COPIED = {"metrics.json", MODEL_FILE, "train.log", "checkpoint.pt", "best.safetensors", ALIGN_FILE}


def _valid_metrics(model, split, cfg_eval, context) -> dict:
    acc = ListAccumulator(
        context, future_ratings(split, "valid"), 10 if 10 in cfg_eval.ks else max(cfg_eval.ks)
    )
    convention = "filtered" if cfg_eval.exclude_history else "unfiltered"
    res = evaluate(
        model, split.valid, split.n_items, cfg_eval, None, (convention,), coverage=False, lists=acc
    )
    m = res[convention]
    keep = (
        "ndcg@10",
        "recall@10",
        "liked_precision@10",
        "disliked_share@10",
        "reward@10",
        "popular_share@10",
    )
    return {f"valid_{k}": m[k] for k in keep if k in m}


def align_run(run_dir: str | Path, cfg: AlignConfig, out: str | Path, log=print) -> dict:
    """Align the retrieval run in `run_dir` with `cfg` and write the aligned run to `out`; metrics.json's
    content. Raises ConfigError (a ranking run, a model without log-likelihoods, a missing reward run, `out`
    already used) or DataError (not a finished run)."""
    t0 = time.perf_counter()
    run_dir, out = Path(run_dir), Path(out)
    check_out_dir(out)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} exists and is not empty; choose another --out")
    ref_run = load_run(run_dir)
    if ref_run.task != "retrieval":
        raise ConfigError(f"{run_dir} is a ranking run; alignment applies to retrieval (generating) runs")
    model = ref_run.model
    if not (model.can("log_likelihood") or model.can("session_log_likelihood")):
        raise ConfigError(f"{model.cfg.name} exposes no log-likelihood; DPO cannot train it")
    if cfg.pairs == "reward-beams" and not cfg.reward_run:
        raise ConfigError("--pairs reward-beams needs a reward model: --reward-run RANKING_RUN_DIR")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    data_cfg = ref_run.cfg.data
    ds = prepare_dataset(data_cfg)
    split = make_split(ds, data_cfg, ref_run.items["item_id"].to_numpy(), ref_run.users["user_id"].to_numpy())
    reward_model = load_reward_model(cfg.reward_run, cfg.reward_diversity) if cfg.reward_run else None
    reward = reward_model.bind(split.sequences) if reward_model is not None else None
    context = list_context(split, ref_run.items, reward)

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    reference = copy.deepcopy(model).eval().requires_grad_(False)
    objective = build_objective(cfg.objective, model, beta=cfg.beta, sft_weight=cfg.sft_weight)
    optimizer = build_optimizer(model, TrainConfig(lr=cfg.lr, weight_decay=0.0, grad_clip=cfg.grad_clip))
    sets = UserSets(split, cfg) if cfg.pairs in ("ratings", "self-play") else None
    history = [{"round": 0, **_valid_metrics(model, split, ref_run.cfg.eval, context)}]
    log(f"round 0 (reference): {history[0]}")
    n_pairs = 0
    for rnd in range(1, cfg.rounds + 1):
        t1 = time.perf_counter()
        if cfg.pairs == "ratings":
            pairs = rating_pairs(split, cfg, rng, sets)
        elif cfg.pairs == "self-play":
            pairs = self_play_pairs(split, cfg, model, rng, sets)
        else:
            pairs = reward_beam_pairs(split, cfg, model, reward, rng)
        pair_seconds = time.perf_counter() - t1
        n_pairs += len(pairs)
        # Dropout stays off, as in TRL's DPOTrainer: the margins then start at exactly 0 against the reference.
        model.eval()
        losses = []
        for _ in range(cfg.epochs):
            for batch in preference_batches(split, pairs, cfg.batch_size, model.max_history, rng):
                loss = training_step(model, objective, optimizer, batch, cfg.grad_clip, reference)
                losses.append(float(loss.detach()))
        record = {
            "round": rnd,
            "pairs": len(pairs),
            "loss": float(np.mean(losses)) if losses else float("nan"),
            "pair_seconds": round(pair_seconds, 2),
            "train_seconds": round(time.perf_counter() - t1 - pair_seconds, 2),
            **_valid_metrics(model, split, ref_run.cfg.eval, context),
        }
        history.append(record)
        log(f"round {rnd}/{cfg.rounds}: {record}")
    align_seconds = time.perf_counter() - t0

    out.mkdir(parents=True, exist_ok=True)
    try:
        for path in run_dir.iterdir():
            if path.is_file() and path.name not in NOT_COPIED:
                shutil.copy2(path, out / path.name)
        write_text(out / ALIGN_FILE, yaml.safe_dump({"align": cfg.model_dump(mode="json")}, sort_keys=False))
        save_weights(out / MODEL_FILE, model.state_dict())
        with make_progress(False) as bar:
            metrics = evaluate_split(model, split, ref_run.cfg.eval, progress=bar, context=context)
        summary = {
            "objective": cfg.objective,
            "rounds": cfg.rounds,
            "pairs": n_pairs,
            "align_seconds": round(align_seconds, 2),
            "history": history,
            "reference_training": ref_run.metrics.get("training", {}),
        }
        metrics["protocol"] = retrieval_protocol(ref_run.cfg, split, ds, data_cfg.dataset, model, summary)
        metrics["protocol"]["checkpoint_selection"] = (
            f"weights after the last of {cfg.rounds} alignment round(s) (no selection); beta, rounds and epochs "
            "are chosen on validation"
        )
        metrics["protocol"]["seed"] = cfg.seed
        metrics["protocol"]["alignment"] = alignment_protocol(run_dir, cfg, reward_model)
        metrics["training"] = summary
        write_json(out / "metrics.json", metrics)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    return metrics


def alignment_protocol(run_dir: Path, cfg: AlignConfig, reward_model) -> dict:
    """What the aligned run's numbers depend on beyond the reference run's protocol."""
    return {
        "reference_run": str(Path(run_dir).resolve()),
        "pair_source": cfg.pairs,
        "objective": cfg.objective,
        "beta": cfg.beta,
        "negatives": cfg.negatives,
        "sft_weight": cfg.sft_weight,
        "rounds": cfg.rounds,
        "epochs_per_round": cfg.epochs,
        "lr": cfg.lr,
        "seed": cfg.seed,
        "reward_run": None if reward_model is None else str(reward_model.dir.resolve()),
        "reward": None
        if reward_model is None
        else f"mean like-probability of the list's items + {cfg.reward_diversity} x genre diversity",
        "pairs_from": "training events only (before the validation cut-off)",
    }
