"""llm_tree (LLM-guided tree retrieval) against popularity on the same test users, and the backends' agreement.

llm_tree and popularity are measured on the same sampled test users, with the LLM's token costs; the two LLM
backends are local transformers and llama.cpp's OpenAI-compatible server.

    GENREC_DATA=... python -m benchmarks llm_tree --users 1000 [--agree-users 50] [--dataset amazon-beauty]

Protocol: leave-one-out test split; `--users` test users sampled uniformly (numpy seed `--seed`); every model
ranks the full catalogue (history excluded: the headline convention; the evaluator is genrec's own). Also listed:
`text similarity` (no LLM, no tree: the within-leaf rule over the whole catalogue) and `tree, no LLM` (the same
beam, each child scored by how many of the history's items lie under it), which separate what the tree, the LLM
and the ranking rule each bring. LLM tokens per user are the prompt + completion tokens of every call (cached
answers count their original tokens). Agreement: the first `--agree-users` users are walked by both backends;
reported: identical chosen leaves, identical top-20 lists.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

from benchmarks._common import Report, item_table, parser, sample, take
from genrec.config import DataConfig, EvalConfig
from genrec.eval.evaluator import evaluate
from genrec.llm import LLMConfig, Usage
from genrec.models.base import Resources, build_model
from genrec.models.llm_tree import LLMTree, LLMTreeConfig
from genrec.models.popularity import PopularityConfig
from genrec.runs.retrieval import make_split, prepare_dataset


class TextSimilarity(LLMTree):
    """The within-leaf rule alone over the whole catalogue: no tree, no LLM."""

    def leaves_for(self, history):
        return [(0.0, n) for n, node in enumerate(self.nodes) if not node["children"]]


class CountTree(LLMTree):
    """The same beam with each child scored by the share of the history's items under it (no LLM)."""

    def _child_logprobs(self, history, node):
        under = [self._under(c) for c in self.nodes[node]["children"]]
        counts = np.array([sum(i in u for i in history) for u in under], dtype=float) + 0.1
        return np.log(counts / counts.sum())

    def _under(self, n):
        if not hasattr(self, "_under_cache"):
            self._under_cache = {}
        if n not in self._under_cache:
            node = self.nodes[n]
            self._under_cache[n] = set(node["items"]).union(*(self._under(c) for c in node["children"]))
        return self._under_cache[n]


def fitted(cls, cfg, split, items):
    model = cls(cfg, split.n_items, split.n_users)
    model.prepare(split, Resources(items=items))
    return model.eval()


def row(name, metrics, seconds, n, tokens=None) -> list[str]:
    f = metrics["filtered"]
    tok = f"{tokens / n:,.0f}" if tokens is not None else "-"
    return [name, f"{f['recall@20']:.4f}", f"{f['ndcg@10']:.4f}", tok, f"{seconds / n:.2f}"]


def histories(users, n_read: int) -> list[list[int]]:
    h = users.history
    return [h.items[h.offsets[r] : h.offsets[r + 1]].tolist()[-n_read:] for r in range(len(users))]


def walk_and_evaluate(args, report: Report, tree: LLMTree, split, items, users) -> None:
    """The LLM walks under the time budget, then every model evaluated on the users walked; prints the table."""
    cfg = tree.cfg
    # The LLM walks first, under a time budget (their answers land in the response cache); the evaluator
    # then ranks the users walked, and every model is measured on exactly those users.
    start, done = time.perf_counter(), 0
    for hist in histories(users, cfg.history_items):
        if time.perf_counter() - start > args.budget_seconds:
            break
        tree.leaves_for(hist)
        done += 1
    walk_seconds = time.perf_counter() - start
    walked = take(users, np.arange(done))
    print(f"walked {done} users in {walk_seconds:.0f} s", file=sys.stderr, flush=True)
    ev = EvalConfig(ks=[10, 20])
    lines = []

    def run(name, model, tokens=None, seconds=None):
        t = time.perf_counter()
        metrics = evaluate(model, walked, split.n_items, ev)
        seconds = seconds if seconds is not None else time.perf_counter() - t
        lines.append(row(name, metrics, seconds, len(walked), tokens))
        report.results[name] = {
            "metrics": metrics,
            "seconds": seconds,
            "users": len(walked),
            "tokens": tokens,
        }
        print(" | ".join(lines[-1]), file=sys.stderr, flush=True)

    pop = build_model(PopularityConfig(), split.n_items, split.n_users)
    pop.prepare(split, Resources())
    run("popularity", pop.eval())
    run("text similarity (no tree, no LLM)", fitted(TextSimilarity, cfg, split, items))
    run("tree, history counts (no LLM)", fitted(CountTree, cfg, split, items))
    tree.llm.usage = Usage()  # count each user's walk once (the evaluator walks twice, from the cache)
    for hist in histories(walked, cfg.history_items):
        tree.leaves_for(hist)
    tokens = tree.llm.usage.total_tokens
    name = f"llm_tree, {args.model} via {args.walk_backend} (beam {args.beam}, {args.scoring})"
    run(name, tree, tokens, walk_seconds * len(walked) / max(done, 1))
    report.line(f"usage of the walks: {tree.llm.usage.as_dict()}\n")
    report.table(["model", "R@20", "N@10", "LLM tokens / user", "s / user"], lines)
    report.line(
        f"\n{args.dataset}, {len(walked)} sampled test users (seed {args.seed}; {args.users} asked, "
        f"{args.budget_seconds:.0f} s budget), full catalogue, history excluded; s / user of llm_tree = "
        "its LLM walk (uncached), others = evaluation"
    )


def served(cfg: LLMTreeConfig, server, args) -> LLMTreeConfig:
    """`cfg` with its LLM behind the running llama.cpp server."""
    llm = LLMConfig(
        backend="openai", base_url=server.base_url, model=server.model_name, prompt_prefix=args.prompt_prefix
    )
    return cfg.model_copy(update={"llm": llm})


def main(argv: list[str] | None = None) -> None:
    p = parser(__name__, __doc__)
    p.add_argument("--dataset", default="amazon-beauty")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--budget-seconds", type=float, default=300, help="LLM walks stop here; fewer users then")
    p.add_argument("--agree-users", type=int, default=30)
    p.add_argument("--agree-seconds", type=float, default=120)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--beam", type=int, default=3)
    p.add_argument("--scoring", default="pmi")
    p.add_argument("--model", default="smollm2", help="the LLM (transformers backend)")
    p.add_argument(
        "--prompt-prefix",
        default="<|im_start|>",
        help="SmolLM2's BOS token before every prompt, on both backends (llama.cpp's echo needs it)",
    )
    p.add_argument(
        "--only",
        choices=["transformers", "server", "both"],
        default="both",
        help="transformers: the budgeted walks and the table; server: the two backends' agreement; both",
    )
    p.add_argument(
        "--walk-backend",
        choices=["transformers", "server"],
        default="transformers",
        help="backend of the budgeted walks (server: llama.cpp's OpenAI-compatible server, started here)",
    )
    args = p.parse_args(argv)
    report = Report(__name__, args)
    torch.set_num_threads(args.threads)

    data_cfg = DataConfig(dataset=args.dataset, data_dir=args.data_dir)
    ds = prepare_dataset(data_cfg)
    split = make_split(ds, data_cfg)
    items = item_table(ds, split.sequences.item_ids)
    users = sample(split.test, args.users, args.seed)
    cfg = LLMTreeConfig(
        beam=args.beam,
        scoring=args.scoring,
        llm=LLMConfig(model=args.model, threads=args.threads, prompt_prefix=args.prompt_prefix),
    )
    tree = fitted(LLMTree, cfg, split, items)
    report.line(f"tree: {len(tree.nodes)} nodes, depth {tree._depth()}")

    if args.only in ("transformers", "both"):
        if args.walk_backend == "server":
            from genrec.llm.local import smollm2_path
            from genrec.llm.server import LlamaCppServer

            with LlamaCppServer(smollm2_path(), threads=args.threads) as server:
                served_tree = fitted(LLMTree, served(cfg, server, args), split, items)
                walk_and_evaluate(args, report, served_tree, split, items, users)
        else:
            walk_and_evaluate(args, report, tree, split, items, users)

    if args.only in ("server", "both"):
        from genrec.data.batching import HistoryBatch
        from genrec.llm.local import smollm2_path
        from genrec.llm.server import LlamaCppServer

        with LlamaCppServer(smollm2_path(), threads=args.threads) as server:
            served_tree = fitted(LLMTree, served(cfg, server, args), split, items)
            same_leaves = same_lists = n = 0
            t = time.perf_counter()
            for hist in histories(users, cfg.history_items)[: args.agree_users]:
                if time.perf_counter() - t > args.agree_seconds:
                    break
                batch = HistoryBatch(torch.tensor([hist]))
                la, lb = (
                    tree.recommend(batch, 20)[0][0].tolist(),
                    served_tree.recommend(batch, 20)[0][0].tolist(),
                )
                same_leaves += [x for _, x in tree.leaves_for(hist)] == [
                    x for _, x in served_tree.leaves_for(hist)
                ]
                same_lists += la == lb
                n += 1
            seconds = time.perf_counter() - t
        report.line(
            f"backends agree (first {n} sampled users): same chosen leaves {same_leaves}/{n}, same top-20 "
            f"{same_lists}/{n}; llama.cpp server {served_tree.llm.usage.total_tokens / max(n, 1):,.0f} tokens/user, "
            f"{seconds / max(n, 1):.2f} s/user (transformers walks partly cached)"
        )
        report.results["agreement"] = {
            "users": n,
            "same_leaves": same_leaves,
            "same_top20": same_lists,
            "server_seconds": seconds,
        }
    report.save()
