"""Command line: `genrec datasets | recipes | train | evaluate | align | recommend | serve | expand | sweep`.

Input errors print one line (`error: ...`) and exit with status 2; nothing is half-written.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

import genrec
from genrec.errors import GenrecError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Generative recommendation: train, evaluate and query recommenders.",
)
# Wide when piped so metric tables are not cut; a terminal keeps its own width.
out = Console(width=None if sys.stdout.isatty() else 160)


def computed_ks(metrics: dict) -> list[int]:
    """The K values the metric dicts of a metrics.json hold (`recall@K`), in order: `eval.ks` of the run."""
    ks = {
        int(name.split("@")[1])
        for m in metrics.values()
        if isinstance(m, dict)
        for name in m
        if name.startswith("recall@")
    }
    return sorted(ks)


def metrics_table(metrics: dict, title: str = "") -> Table:
    """Recall / NDCG at every computed K, MRR, coverage at K = 10 (else the largest K) and the example count,
    one row per split and convention; "-" where a value is missing or undefined."""
    ks = computed_ks(metrics)
    cov_k = 10 if 10 in ks else (ks[-1] if ks else 10)
    table = Table(title=title, title_justify="left")
    table.add_column("split")
    for k in ks:
        table.add_column(f"R@{k}", justify="right")
        table.add_column(f"N@{k}", justify="right")
    table.add_column("MRR", justify="right")
    table.add_column(f"Cov@{cov_k}", justify="right")
    table.add_column("users", justify="right")

    def cell(value, digits: int = 4) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    for key, m in metrics.items():
        if not isinstance(m, dict) or "mrr" not in m:
            continue
        cells = []
        for k in ks:
            cells += [cell(m.get(f"recall@{k}")), cell(m.get(f"ndcg@{k}"))]
        table.add_row(key, *cells, cell(m["mrr"]), cell(m.get(f"coverage@{cov_k}"), 3), str(m["examples"]))
    return table


def print_list_metrics(m: dict) -> None:
    """The list-level metrics of a split's metrics (genrec.eval.lists), one line; nothing when there are none."""
    names = ("liked_precision", "disliked_share", "rated", "ild", "popular_share", "reward")
    shown = [f"{k} {v:.4f}" for k, v in m.items() if k.split("@")[0] in names and isinstance(v, float)]
    if shown:
        out.print("test list metrics: " + ", ".join(shown))


def print_session_metrics(metrics: dict) -> None:
    """The test sessions' metrics (genrec.eval.sessions), one line; nothing without them."""
    m = metrics.get("test_sessions")
    if m:
        shown = [f"{k} {v:.4f}" for k, v in m.items() if k.startswith("session_")]
        out.print(f"test sessions ({m['source']}, {m['users']} users): " + ", ".join(shown))


def print_protocol(p: dict) -> None:
    out.print(
        f"[dim]protocol: {p['dataset']} | {p['split']['split']} | {p['candidates']} | "
        f"valid/test: {p['headline_convention']}; *_unfiltered: every item ranked | {p['ties']} | "
        f"checkpoint: {p['checkpoint_selection']}[/dim]"
    )


def print_examples(run, n_users: int = 3, k: int = 5) -> None:
    """A few users' last items and top-k recommendations, with titles."""
    import numpy as np

    users = run.users
    picks = np.linspace(0, users.height - 1, n_users).astype(int)
    for u in picks:
        raw_user = users["user_id"][int(u)]
        _, history, times = run.user_history(raw_user)
        ids, _ = run.recommend_internal(
            history[:-1], k, exclude_seen=True, user=int(u), timestamps=None if times is None else times[:-1]
        )
        out.print(f"[bold]user {raw_user}[/bold] recently: " + "; ".join(run.titles(history[-4:-1])))
        held_out = history[-1]
        for rank, (i, title) in enumerate(zip(ids, run.titles(ids)), 1):
            mark = "  <- held-out next item" if i == held_out else ""
            out.print(f"   {rank}. {title}{mark}")


def _print_version(value: bool) -> None:
    if value:
        print(f"genrec {genrec.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", help="print the version and exit", is_eager=True, callback=_print_version
    ),
) -> None:
    """Generative recommendation: train, evaluate and query recommenders."""


@app.command()
def datasets(data_dir: str | None = typer.Option(None, "--data-dir", help="extra folder to search")) -> None:
    """Registered datasets, where they were found, and their statistics."""
    from genrec.data.registry import REGISTRY, load_dataset, locate

    table = Table()
    for col in ("name", "users", "items", "interactions", "avg len", "timestamps", "item text", "found at"):
        table.add_column(col)
    for name, info in REGISTRY.items():
        folder = locate(name, data_dir)
        if folder is None:
            table.add_row(
                name, "-", "-", "-", "-", "-", "-", "not found" + (" (downloadable)" if info.url else "")
            )
            continue
        s = load_dataset(name, data_dir).stats()
        table.add_row(
            name,
            f"{s['users']:,}",
            f"{s['items']:,}",
            f"{s['interactions']:,}",
            str(s["avg_seq_len"]),
            s["timestamps"] + (f" ({s['unordered_users']} users unordered)" if s["unordered_users"] else ""),
            f"{s['items_with_title']:,} titles",
            str(folder),
        )
    out.print(table)


@app.command()
def recipes() -> None:
    """Built-in recipes (model defaults and tuned MODEL-DATASET configs)."""
    from genrec.config import list_recipes, recipe_dict

    table = Table()
    table.add_column("recipe")
    table.add_column("model")
    table.add_column("dataset")
    for name in list_recipes():
        raw = recipe_dict(name)
        model = raw.get("model", {}).get("name", "(its init_from run's)")
        table.add_row(name, model, raw.get("data", {}).get("dataset", "(default)"))
    out.print(table)


def print_ranking_metrics(metrics: dict, ks: list[int], title: str) -> None:
    table = Table(title=title, title_justify="left")
    cols = ["auc", "gauc", "logloss", *[f"ndcg@{k}" for k in ks], "ndcg", "impressions", "users"]
    table.add_column("split")
    for c in cols:
        table.add_column(c.upper() if c in ("auc", "gauc") else c, justify="right")
    for split in ("valid", "test"):
        m = metrics[split]
        # An undefined metric (null in metrics.json, e.g. GAUC without two-class users) shows as "-".
        cells = [
            "-"
            if m.get(c) is None or m[c] != m[c]
            else f"{m[c]:.4f}"
            if isinstance(m[c], float)
            else str(m[c])
            for c in cols
        ]
        table.add_row(split, *cells)
    out.print(table)
    p = metrics["protocol"]
    out.print(
        f"[dim]protocol: {p['dataset']} | {p['split']['split']} ({p['split']['label']}) | {p['history']} | "
        f"checkpoint: {p['checkpoint_selection']}[/dim]"
    )


def print_metrics(cfg, metrics: dict) -> None:
    """The metrics' table and protocol line: catalogue metrics (recall, NDCG, MRR) or impression metrics (AUC,
    GAUC, LogLoss), whichever the run's metrics hold."""
    title = f"{cfg.model.name} on {metrics['protocol']['dataset']}"
    if any(isinstance(m, dict) and "mrr" in m for m in metrics.values()):
        out.print(metrics_table(metrics, title))
        print_protocol(metrics["protocol"])
    else:
        print_ranking_metrics(metrics, cfg.eval.ks, title)


@app.command("config")
def config_reference(
    names: list[str] = typer.Argument(
        None,
        help="model, task or objective names (default: every registered model, every task no model runs by "
        "default, every objective)",
    ),
    markdown: bool = typer.Option(False, "--markdown", help="print docs/config.md's Markdown"),
) -> None:
    """Every config key a model's runs accept, and the keys of the other tasks and of every objective, with type,
    default and description (set them with --set)."""
    from genrec import registry
    from genrec.config import objective_reference, reference, task_reference

    models = registry.names()
    tasks = [t for t in registry.TASKS.names() if t not in {registry.config_class(m).task for m in models}]
    sections = []
    for name in names or [*models, *tasks, *registry.OBJECTIVES.names()]:
        if name in models:
            sections.append((f"{name} ({registry.config_class(name).task})", reference(name)))
        elif name in registry.TASKS.names():
            sections.append((f"task {name} (task={name}, beside a model's keys)", task_reference(name)))
        else:
            sections.append((f"{name} (objective: train.objective.name={name})", objective_reference(name)))
    for title, rows in sections:
        if markdown:
            print(f"## {title}\n")
            print("| key | type | default | description |\n|---|---|---|---|")
            for key, kind, default, text in rows:
                cells = [f"`{key}`", kind.replace("|", "\\|"), f"`{default}`", text.replace("|", "\\|")]
                print("| " + " | ".join(cells) + " |")
            print()
            continue
        table = Table(title=title, title_justify="left")
        for col in ("key", "type", "default", "description"):
            table.add_column(col)
        for row in rows:
            table.add_row(*row)
        out.print(table)


TRAIN_DEVICE_HELP = (
    "auto | cpu | cuda | cuda:N | mps (the same as --set train.device=...; default: the recipe's)"
)
RUN_DEVICE_HELP = "where the model runs: auto (a CUDA GPU when there is one) | cpu | cuda | cuda:N | mps"


def device_override(device: str | None) -> list[str]:
    """`--device D` as the config override it stands for (none when not given)."""
    return [] if device is None else [f"train.device={json.dumps(device)}"]


@app.command()
def train(
    recipe: str = typer.Argument(..., help="built-in recipe name or a YAML file"),
    dataset: str | None = typer.Option(None, "--dataset", help="dataset name, P5 folder or CSV/Parquet file"),
    set_: list[str] = typer.Option([], "--set", help="override, e.g. --set train.epochs=5"),
    out_dir: Path | None = typer.Option(
        None, "--out", help="run directory (default runs/RECIPE-DATASET-TIME)"
    ),
    resume: bool = typer.Option(False, "--resume", help="continue an interrupted run in --out"),
    examples: int = typer.Option(3, "--examples", help="users whose recommendations are printed (retrieval)"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    nproc: int = typer.Option(
        1,
        "--nproc",
        min=1,
        help="data-parallel processes on one node (started with torchrun; train.batch_size is the global "
        "batch); several machines: docs/distributed.md",
    ),
    device: str | None = typer.Option(None, "--device", help=TRAIN_DEVICE_HELP),
) -> None:
    """Train a retrieval model or a ranker, evaluate it, write a run directory."""
    from genrec.config import load_config

    # A bad config fails here, before any process is started.
    cfg = load_config(recipe, [*set_, *device_override(device)], dataset)
    run_config(cfg, recipe, out_dir, resume, progress, nproc, examples)


def run_config(
    cfg, recipe: str, out_dir: Path | None, resume: bool, progress: bool, nproc: int, examples: int
) -> dict | None:
    """Train `cfg` into `out_dir` (one process, or `nproc` under torchrun), print its metrics and return them
    (None in a process that is not rank 0): `train` and `align` end here."""
    from genrec.runs import load_run, train_run
    from genrec.runs.store import default_run_dir
    from genrec.runs.task import make_task
    from genrec.training import distributed

    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        raise typer.Exit(launch_torchrun(nproc))
    if not distributed.init_from_env().is_main:
        train_run(cfg, out_dir or Path("unused"), resume=resume, progress=False)
        distributed.shutdown()
        return None
    if out_dir is None:
        if resume:
            raise GenrecError("--resume needs --out RUN_DIR")
        out_dir = default_run_dir(recipe, cfg.data.dataset)
    task = make_task(cfg)
    out.print(
        f"training [bold]{cfg.model.name}[/bold] ({task.name}) on [bold]{cfg.data.dataset}[/bold] -> {out_dir}"
    )
    metrics = train_run(cfg, out_dir, resume=resume, progress=progress)
    print_metrics(cfg, metrics)
    tr = metrics["training"]
    if "best_epoch" in tr:
        out.print(
            f"[dim]trained {tr['epochs_run']} epochs in {tr['train_seconds']}s; best validation at epoch "
            f"{tr['best_epoch']} ({tr['seconds_to_best']}s)[/dim]"
        )
    if examples and task.can("recommend"):
        print_examples(load_run(out_dir), examples)
    out.print(f"run directory: {out_dir}")
    distributed.shutdown()
    return metrics


def launch_torchrun(nproc: int) -> int:
    """This command again under `torchrun --standalone --nproc_per_node N` (one machine, a free port), without
    `--nproc`; its exit status."""
    import subprocess

    args, skip = [], False
    for a in sys.argv[1:]:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            args.append(a)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    return subprocess.call([*cmd, "-m", "genrec", *args])


# `rank-train` predates the one task stack: the same command, kept because scripts and docs call it.
app.command(
    "rank-train", help="Same as `train` (kept for ranking recipes: din, hstu_ranker, genrank, mtgr)."
)(train)


@app.command()
def evaluate(
    run_dir: Path = typer.Argument(..., help="a run directory written by `genrec train`"),
    dataset: str | None = typer.Option(None, "--dataset", help="evaluate on another dataset SPEC"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    reward_run: Path | None = typer.Option(
        None, "--reward-run", help="ranking run scoring the top-10 lists (reward@10, retrieval runs)"
    ),
    device: str = typer.Option("auto", "--device", help=RUN_DEVICE_HELP),
) -> None:
    """Evaluate a trained run (retrieval: full-catalogue ranking, both history conventions; ranking: AUC...)."""
    from genrec.runs import evaluate_run, load_run

    run = load_run(run_dir, device)
    reward = None
    if reward_run is not None:
        from genrec.runs.preference import load_reward_model

        reward = load_reward_model(reward_run)
    metrics = evaluate_run(run, dataset, progress, reward)
    print_metrics(run.cfg, metrics)
    print_list_metrics(metrics["test"])
    print_session_metrics(metrics)


# `genrec align --set KEY=VALUE` also takes the flat keys of the align section it had before alignment became a
# task: each is the run config key it now is.
ALIGN_KEYS = {
    "pairs": "data.pairs",
    "objective": "train.objective.name",
    "beta": "train.objective.beta",
    "sft_weight": "train.objective.sft_weight",
    "negatives": "data.negatives",
    "rounds": "train.epochs",
    "lr": "train.lr",
    "batch_size": "train.batch_size",
    "grad_clip": "train.grad_clip",
    "seed": "train.seed",
    "threads": "train.threads",
    **{
        key: f"data.{key}"
        for key in ("anchors_per_user", "like", "dislike", "self_play_top", "reward_run", "reward_diversity")
        + ("beams", "session_len", "users_per_round")
    },
}


@app.command()
def align(
    run_dir: Path = typer.Argument(..., help="a trained retrieval run (the reference model)"),
    recipe: str | None = typer.Option(
        None, "--recipe", help="preference recipe (e.g. sasrec-dpo-ml-1m) or YAML; default: preference"
    ),
    pairs: str | None = typer.Option(None, "--pairs", help="ratings | self-play | reward-beams"),
    objective: str | None = typer.Option(None, "--objective", help="dpo | sdpo (or a registered objective)"),
    beta: float | None = typer.Option(None, "--beta", help="DPO beta"),
    negatives: int | None = typer.Option(None, "--negatives", help="rejected items per pair (K)"),
    reward_run: Path | None = typer.Option(None, "--reward-run", help="ranking run used as reward model"),
    rounds: int | None = typer.Option(None, "--rounds", help="pair generation rounds (= epochs)"),
    set_: list[str] = typer.Option([], "--set", help="any config key, e.g. --set train.lr=3e-4"),
    out_dir: Path | None = typer.Option(
        None, "--out", help="run directory (default RUN_DIR-PAIRS-OBJECTIVE)"
    ),
    resume: bool = typer.Option(False, "--resume", help="continue an interrupted alignment in --out"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    nproc: int = typer.Option(1, "--nproc", min=1, help="data-parallel processes on one node (as in train)"),
    device: str | None = typer.Option(None, "--device", help=TRAIN_DEVICE_HELP),
) -> None:
    """Preference-align a trained run (DPO / S-DPO on rating, self-play or reward-model pairs) into a new run:
    a run of task `preference` that starts from RUN_DIR (`genrec train RECIPE --set init_from=RUN_DIR`)."""
    import time

    from genrec.config import load_config

    flags = {
        "data.pairs": pairs,
        "train.objective.name": objective,
        "train.objective.beta": beta,
        "data.negatives": negatives,
        "data.reward_run": None if reward_run is None else str(reward_run),
        "train.epochs": rounds,
    }
    overrides = [f"init_from={json.dumps(str(run_dir))}"]
    for pair in set_:
        key, sep, value = pair.partition("=")
        overrides.append(f"{ALIGN_KEYS.get(key, key)}{sep}{value}")
    overrides += [f"{key}={json.dumps(value)}" for key, value in flags.items() if value is not None]
    cfg = load_config(recipe or "preference", [*overrides, *device_override(device)])
    obj = cfg.train.objective
    out_dir = out_dir or run_dir.parent / f"{run_dir.name}-{cfg.data.pairs}-{obj.name}"
    beta_text = f", beta {obj.beta:g}" if hasattr(obj, "beta") else ""
    out.print(f"aligning {run_dir} ({cfg.data.pairs} pairs, {obj.name}{beta_text}) -> {out_dir}")
    t0 = time.perf_counter()
    metrics = run_config(cfg, recipe or "preference", out_dir, resume, progress, nproc, examples=0)
    if metrics is None:  # a process of a distributed run other than rank 0
        return
    print_list_metrics(metrics["test"])
    print_session_metrics(metrics)
    out.print(f"aligned in {time.perf_counter() - t0:.1f}s; run directory: {out_dir}")


@app.command()
def recommend(
    run_dir: Path = typer.Argument(...),
    user: str | None = typer.Option(None, "--user", help="a user id known to the run"),
    history: str | None = typer.Option(None, "--history", help="comma-separated item ids, oldest first"),
    candidates: str | None = typer.Option(
        None, "--candidates", help="comma-separated item ids to score (ranking runs need them)"
    ),
    k: int = typer.Option(10, "-k", min=1, max=10_000),
    include_seen: bool = typer.Option(False, "--include-seen", help="allow items already in the history"),
    all_users: bool = typer.Option(
        False, "--all-users", help="every user's top-k, written to --out (Parquet)"
    ),
    out_file: Path | None = typer.Option(None, "--out", help="with --all-users: the Parquet file to write"),
    device: str = typer.Option("auto", "--device", help=RUN_DEVICE_HELP),
) -> None:
    """Top-k for a known user or an ad-hoc history, with titles; with --candidates, their scores instead; with
    --all-users --out FILE, every user's top-k into a Parquet file."""
    from genrec.runs import load_run

    if all_users or out_file is not None:
        return recommend_every_user(
            run_dir, all_users, out_file, k, include_seen, device, user, history, candidates
        )
    if (user is None) == (history is None):
        raise GenrecError("give exactly one of --user ID or --history ID,ID,...")
    run = load_run(run_dir, device)
    raw_history = None
    if history is not None:
        raw_history = [x.strip() for x in history.split(",") if x.strip()]
        if not raw_history:
            raise GenrecError("--history is empty")
    who = f"user {user}" if user is not None else f"history of {len(raw_history)} items"
    if candidates is not None or not run.task.can("recommend"):
        if candidates is None:
            raise GenrecError("a ranking run scores given items: add --candidates ID,ID,...")
        cands = [x.strip() for x in candidates.split(",") if x.strip()]
        scored = run.rank(cands, user=user, history=raw_history).sort("score", descending=True)
        table = Table(title=f"{len(cands)} candidates for {who}, best first")
        for col in ("rank", "item_id", "score", "title"):
            table.add_column(col)
        titles = run.titles(run.item_index(scored["item_id"].to_list()))
        for rank, (i, s, t) in enumerate(zip(scored["item_id"], scored["score"], titles), 1):
            table.add_row(str(rank), str(i), f"{s:.4f}", t)
        out.print(table)
        return
    recs = run.recommend(user=user, history=raw_history, k=k, exclude_seen=not include_seen)
    table = Table(title=f"top-{k} for {who}")
    for col in ("rank", "item_id", "score", "title"):
        table.add_column(col)
    for rank, row in enumerate(recs.iter_rows(named=True), 1):
        table.add_row(str(rank), str(row["item_id"]), f"{row['score']:.4f}", row["title"])
    out.print(table)


def recommend_every_user(
    run_dir: Path, all_users: bool, out_file: Path | None, k: int, include_seen: bool, device: str, *single
) -> None:
    """`recommend RUN --all-users --out FILE`: every user's top-k streamed to a Parquet file (user_id, rank,
    item_id, score), in batches of users, each catalogue scored in item chunks."""
    import time

    from genrec.inference.all_users import recommend_all_users
    from genrec.runs import load_run

    if not all_users:
        raise GenrecError("--out goes with --all-users (one user's list is printed)")
    if any(x is not None for x in single):
        raise GenrecError("--all-users takes no --user, --history or --candidates")
    if out_file is None:
        raise GenrecError("--all-users writes a file: add --out FILE.parquet")
    if out_file.suffix != ".parquet":
        raise GenrecError(f"--out {out_file}: give a .parquet file")
    run = load_run(run_dir, device)
    t0 = time.perf_counter()
    rows = recommend_all_users(run, out_file, k, include_seen)
    out.print(
        f"{rows:,} rows for {run.users.height:,} users written to {out_file} in {time.perf_counter() - t0:.1f}s"
    )


@app.command()
def expand(
    dataset: str = typer.Argument(..., help="dataset name, P5 folder or CSV/Parquet file to grow"),
    factor: float = typer.Option(..., "--factor", min=1, help="interactions of the output / of the source"),
    out_dir: Path = typer.Option(..., "--out", help="folder for interactions.parquet and meta.json"),
    users_copies: int | None = typer.Option(None, "--user-copies", min=1, help="m (default ceil(sqrt(2F)))"),
    items_copies: int | None = typer.Option(None, "--item-copies", min=1, help="n (default ceil(sqrt(2F)))"),
    reduced: str = typer.Option(
        "blocks", "--reduced", help="reduced matrix: blocks (from the data) or uniform"
    ),
    seed: int = typer.Option(0, "--seed"),
    data_dir: str | None = typer.Option(None, "--data-dir", help="extra folder to search"),
) -> None:
    """Grow a real dataset into a larger synthetic one with the same statistics (fractal expansion,
    docs/data.md#growing-a-dataset); train on it with --dataset DIR/interactions.parquet."""
    from genrec.data.expand import expand as fractal_expand
    from genrec.data.registry import load_dataset

    if out_dir.is_dir() and any(out_dir.iterdir()):
        raise GenrecError(f"{out_dir} exists and is not empty; choose another --out")
    ds = load_dataset(dataset, data_dir)
    meta = fractal_expand(
        ds.encode(), factor, out_dir, users_copies, items_copies, reduced, seed, source=ds.source or dataset
    )
    out.print(
        f"{meta['source_interactions']:,} interactions x {factor:g} -> {meta['interactions']:,} "
        f"({meta['user_copies']} user copies x {meta['item_copies']} item copies) in {out_dir / 'interactions.parquet'}"
    )
    for note in meta["notes"]:
        out.print(f"[dim]note: {note}[/dim]")


@app.command()
def serve(
    run_dir: Path = typer.Argument(...),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port", min=1, max=65535),
    backend: str = typer.Option(
        "exact", "--backend", help="top-K retrieval: exact | faiss (HNSW, approximate)"
    ),
    threads: int = typer.Option(
        1, "--threads", min=1, help="torch threads per request (requests already run in parallel)"
    ),
    state: Path | None = typer.Option(
        None,
        "--state",
        help="SQLite file of live events (default RUN_DIR/live-events.sqlite; an existing database is fine)",
    ),
    state_sync: str = typer.Option(
        "full",
        "--state-sync",
        help="full: each event fsynced before its answer | normal: fsync at checkpoints",
    ),
    max_live_users: int = typer.Option(
        2_000, "--max-live-users", min=1, help="users whose history and state stay in memory"
    ),
    max_connections: int = typer.Option(
        512, "--max-connections", min=1, help="open connections; more are answered 503 and closed"
    ),
    request_timeout: float = typer.Option(
        10.0, "--request-timeout", min=0.1, help="seconds for a whole request to arrive; slower ones get 408"
    ),
    device: str = typer.Option("auto", "--device", help=RUN_DEVICE_HELP),
) -> None:
    """HTTP API (/recommend, /rank, /events, /items, /healthz, /docs) and a demo page at /."""
    import torch

    from genrec.runs import load_run
    from genrec.serve import create_app
    from genrec.serve.server import ensure_descriptors, make_server

    if backend not in ("exact", "faiss"):
        raise GenrecError(f"--backend must be exact or faiss, got {backend!r}")
    if state_sync not in ("full", "normal"):
        raise GenrecError(f"--state-sync must be full or normal, got {state_sync!r}")
    # One request's matmuls are small: threads inside an op cost more in synchronisation than they save,
    # and spin badly when the cores are busy with other requests.
    torch.set_num_threads(threads)
    ensure_descriptors(max_connections)
    application = create_app(
        load_run(run_dir, device), backend, state=state, max_live_users=max_live_users, state_sync=state_sync
    )
    server = make_server(application, host, port, max_connections, request_timeout)
    engine = application.state.engine
    out.print(
        f"serving {run_dir} on http://{host}:{port} (docs at /docs); live events in {engine.store.path}, "
        f"up to {max_live_users} users in memory (at most {max_live_users * engine.user_bytes / 2**20:.0f} MB)"
    )
    server.run()


@app.command()
def sweep(
    recipe: str = typer.Argument(..., help="built-in recipe name or a YAML file"),
    grid: list[str] = typer.Option([], "--grid", help="key=v1,v2,... (repeat: the grid is their product)"),
    out_dir: Path = typer.Option(..., "--out", help="sweep directory: one run directory per point"),
    dataset: str | None = typer.Option(None, "--dataset"),
    set_: list[str] = typer.Option([], "--set", help="override for every point"),
    budget_minutes: float | None = typer.Option(None, "--budget-minutes", help="total training time"),
    bootstrap: int = typer.Option(200, "--bootstrap", help="bootstrap resamples of each fit"),
    fit_only: bool = typer.Option(False, "--fit-only", help="only fit and plot the finished points in --out"),
    device: str | None = typer.Option(None, "--device", help=TRAIN_DEVICE_HELP),
) -> None:
    """Scaling-law sweep: train a grid of runs (width, depth, history length, data size), then fit validation
    loss and N@10 against parameters and compute (a x^-b + c, bootstrap CIs) and plot them (docs/scaling.md)."""
    from genrec.experiments import scaling

    if not fit_only:
        if not grid:
            raise GenrecError("give at least one --grid key=v1,v2,...")
        sets = [*set_, *device_override(device)]
        scaling.sweep(recipe, scaling.parse_grid(grid), out_dir, dataset, sets, budget_minutes, log=out.print)
    result = scaling.analyse(out_dir, bootstrap)
    rows = json.loads((out_dir / "summary.json").read_text())
    table = Table(title=f"sweep {out_dir}", title_justify="left")
    cols = ["name", "params", "flops", "epochs", "valid_loss", "valid_ndcg@10", "test_ndcg@10"]
    for c in cols:
        table.add_column(c, justify="left" if c == "name" else "right")
    for r in rows:
        table.add_row(*(f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c]) for c in cols))
    out.print(table)
    for key, fit in result["fits"].items():
        if "a" in fit:
            ci = fit["ci95"]["b"]
            band = f" (b 95% CI {ci[0]:.3f}..{ci[1]:.3f})" if ci else ""
            out.print(f"{key}: {fit['a']:.4g} x^-{fit['b']:.4f} + {fit['c']:.4f}{band}")
        else:
            out.print(f"{key}: {fit['error']}")
    for axis, check in result["holdout"].items():
        if "max_rel_error" in check:
            out.print(
                f"holdout ({axis}): fit on the smaller {len(check['fitted_on'])} points predicts the larger "
                f"{len(check['predicted'])} points' validation loss within {100 * check['max_rel_error']:.2f}%"
            )
    out.print(
        f"written: {out_dir}/summary.csv, summary.json, fits.json" + ", plots" * bool(result.get("plots"))
    )


def main() -> None:
    from genrec.runtime import keep_freed_memory

    keep_freed_memory()
    try:
        code = app(standalone_mode=False)
    except GenrecError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:
        kind = _click_kind(e)
        if kind == "usage":  # a mistake on the command line: click's usage message, exit status 2
            e.show()
            sys.exit(2)
        if kind == "click":
            e.show()
            sys.exit(e.exit_code)
        if kind == "exit":
            sys.exit(e.exit_code)
        if kind == "abort":
            print("aborted", file=sys.stderr)
            sys.exit(1)
        raise
    if isinstance(code, int) and code:
        sys.exit(code)


def _click_kind(error: Exception) -> str | None:
    """Which of click's exceptions `error` is, by class name: Typer releases vendor their own copy of click
    (`typer._click`), whose classes are not `click.exceptions`' ones, so `isinstance` against either misses."""
    names = {cls.__name__ for cls in type(error).__mro__ if cls.__module__.startswith(("click", "typer"))}
    if "UsageError" in names:
        return "usage"
    if "ClickException" in names:
        return "click"
    if "Exit" in names:
        return "exit"
    if "Abort" in names:
        return "abort"
    return None


if __name__ == "__main__":
    main()
