"""LLM-guided tree retrieval (LLMTreeRec-style; Zhang et al., COLING 2025, https://arxiv.org/abs/2404.00702): a
pretrained LLM, not fine-tuned, walks a tree of the catalogue so that the prompt never lists the whole catalogue.

- The tree: from the items' category paths where most items have one (Amazon: Beauty > Makeup > Eyes >
  Mascara; the root levels that every item shares are dropped), otherwise from recursive k-means over the items'
  text embeddings (all-MiniLM-L6-v2 by default) with `branching` children per node until a node holds at most
  `leaf_size` items; a cluster's label is its most frequent title words that its parent's label lacks. A node
  that holds items and also has sub-categories gets an extra leaf child "other <label>" for its own items.
- The walk: at each node the LLM scores its children's labels as continuations of a prompt that lists the
  user's `history_items` most recent item titles and the children's labels (`choice_logprobs`: log-probabilities
  where the backend gives them, otherwise a constrained choice). With `scoring: pmi` the log-probability of each
  label after the same prompt without the history is subtracted (domain-conditional PMI, Holtzman et al. 2021,
  https://arxiv.org/abs/2104.08315): a label the model likes for every user (short, frequent words) gains
  nothing by it. The scores are normalised over the node's children (log-softmax) and summed along the path; a
  beam of `beam` paths is kept until every path ends in a leaf. A node with one child costs no call.
- The list: the items of the chosen leaves, ranked by a stated cheap rule (`within_leaf`): `similarity`, the
  cosine between the item's text embedding and the mean embedding of the history items read (popularity in the
  training split breaks ties), or `popularity`. When the chosen leaves hold fewer than k items that are not
  excluded, the list is filled from the rest of the catalogue by the same rule, so it has k real, distinct items
  whenever k exist. Scores are ranks (0, -1, -2, ...): the model has no calibrated per-item score, so it
  declares `generate`, not `score`.

Deviations from the paper: a 135M-parameter local model by default instead of GPT-4-class APIs; the LLM picks
leaves, and a text-similarity rule (not the LLM) orders items inside them (the paper lets the LLM choose items
from a leaf's list). New items are retrievable as soon as they have text or a category: the tree is built from
the item table, not from interactions. LLM calls are cached on disk (`genrec.llm`), and token counts are
summed in `self.llm.usage`.
"""

from __future__ import annotations

import json
import re
from collections import Counter

import numpy as np
import torch

from genrec.config.models.llm_tree import LLMTreeConfig
from genrec.data.batching import HistoryBatch
from genrec.data.split import Split
from genrec.errors import ConfigError, DataError
from genrec.llm import build_llm
from genrec.models.base import Recommender, Resources, register

STOPWORDS = set(
    "the and for with from pack set new men women oz fl ounce ounces count inch each size one two free by of in "
    "on to a an or".split()
)


def _words(text: str) -> list[str]:
    return [w for w in re.findall(r"[a-z][a-z'&-]+", text.lower()) if len(w) > 2 and w not in STOPWORDS]


def category_tree(paths: list[list[str]]) -> list[dict]:
    """Nodes {label, children, items} (node 0 = root) from one category path per item (internal id = index + 1).
    Levels shared by every item with a path are dropped; items without one hang under an 'other' leaf."""
    have = [p for p in paths if p]
    shared = 0
    while have and all(len(p) > shared + 1 and p[shared] == have[0][shared] for p in have):
        shared += 1
    nodes = [{"label": "", "children": [], "items": []}]
    index: dict[tuple, int] = {(): 0}
    for i, path in enumerate(paths):
        key: tuple = ()
        for label in path[shared:] if path else ["other"]:
            parent = index[key]
            key = (*key, label)
            if key not in index:
                index[key] = len(nodes)
                nodes.append({"label": label, "children": [], "items": []})
                nodes[parent]["children"].append(index[key])
        nodes[index[key]]["items"].append(i + 1)
    for n in range(len(nodes)):  # a node with items and sub-categories: its own items become a leaf child
        node = nodes[n]
        if node["children"] and node["items"]:
            nodes.append({"label": f"other {node['label']}".strip(), "children": [], "items": node["items"]})
            node["children"].append(len(nodes) - 1)
            node["items"] = []
    return nodes


def cluster_tree(
    emb: np.ndarray, titles: list[str], branching: int, leaf_size: int, seed: int = 0
) -> list[dict]:
    """Nodes as in `category_tree`, from recursive k-means over L2-normalised item vectors [n_items, d]."""
    from sklearn.cluster import KMeans

    nodes = [{"label": "", "children": [], "items": list(range(1, len(emb) + 1))}]
    todo = [0]
    while todo:
        n = todo.pop()
        members = np.asarray(nodes[n]["items"])
        if len(members) <= leaf_size:
            continue
        k = min(branching, len(members))
        assign = KMeans(k, n_init=1, random_state=seed).fit_predict(emb[members - 1])
        groups = [members[assign == c] for c in range(k) if (assign == c).any()]
        if len(groups) < 2:  # identical vectors: no split possible
            continue
        parent_words = set(nodes[n]["label"].split())
        nodes[n]["items"] = []
        for group in groups:
            counts = Counter(
                w for i in group for w in dict.fromkeys(_words(titles[i - 1])) if w not in parent_words
            )
            top = sorted(counts.items(), key=lambda wc: (-wc[1], wc[0]))[
                :3
            ]  # ties alphabetical: reproducible
            label = " ".join(w for w, _ in top) or f"group {len(nodes)}"
            nodes[n]["children"].append(len(nodes))
            nodes.append({"label": label, "children": [], "items": [int(i) for i in group]})
            todo.append(len(nodes) - 1)
    return nodes


@register
class LLMTree(Recommender):
    config_class = LLMTreeConfig
    capabilities = frozenset({"generate"})
    # Buffers whose size comes from the data: resized on load (see load_state_dict).
    _data_buffers = ("tree_blob", "item_vectors")

    def __init__(self, cfg: LLMTreeConfig, n_items: int, n_users: int) -> None:
        super().__init__(cfg, n_items, n_users)
        self.register_buffer("counts", torch.zeros(n_items + 1))
        self.register_buffer("item_vectors", torch.zeros(0))  # [n_items + 1, d] L2-normalised text vectors
        self.register_buffer("tree_blob", torch.zeros(0, dtype=torch.uint8))  # UTF-8 JSON: nodes and titles
        self.nodes: list[dict] = []
        self.parent: dict[int, int] = {}
        self.titles: list[str] = []
        self._llm = None

    @property
    def max_history(self) -> int | None:
        return self.cfg.history_items

    @property
    def llm(self):
        """The LLM client (built on first use; `llm.usage` holds the token counts)."""
        if self._llm is None:
            self._llm = build_llm(self.cfg.llm)
        return self._llm

    # -- fitting --------------------------------------------------------------------------------------------
    def prepare(self, split: Split, resources: Resources) -> dict:
        from genrec.items.text import item_text_embeddings

        items = resources.item_table(self.cfg.name)
        titles = [
            t if t else str(i)
            for t, i in zip(
                items["title"].to_list() if "title" in items.columns else [None] * len(items),
                items["item_id"].to_list(),
            )
        ]
        emb = item_text_embeddings(items, self.cfg.encoder)
        if not np.abs(emb).sum(1).any():
            raise DataError("llm_tree needs item text (titles / categories); this dataset has none")
        paths = (
            [list(dict.fromkeys(c for c in (cats or []) if c)) for cats in items["categories"].to_list()]
            if "categories" in items.columns
            else [[] for _ in range(len(items))]
        )
        kind = self.cfg.tree
        if kind == "auto":
            kind = "categories" if sum(bool(p) for p in paths) >= len(paths) / 2 else "clusters"
        if kind == "categories":
            if not any(paths):
                raise DataError("llm_tree: tree=categories but no item has categories")
            nodes = category_tree(paths)
        else:
            nodes = cluster_tree(emb, titles, self.cfg.branching, self.cfg.leaf_size)
        counts = np.bincount(split.train.items, minlength=self.n_items + 1).astype(np.float32)
        self.counts.copy_(torch.from_numpy(counts))
        self.item_vectors = torch.from_numpy(np.vstack([np.zeros((1, emb.shape[1]), np.float32), emb]))
        blob = json.dumps({"kind": kind, "nodes": nodes, "titles": titles}).encode()
        self.tree_blob = torch.frombuffer(bytearray(blob), dtype=torch.uint8).clone()
        self._restore()
        leaves = [n for n in self.nodes if not n["children"]]
        return {
            "tree": kind,
            "tree_nodes": len(self.nodes),
            "tree_leaves": len(leaves),
            "tree_depth": self._depth(),
            "largest_leaf": max(len(n["items"]) for n in leaves),
        }

    def _restore(self) -> None:
        if not len(self.tree_blob):
            return
        data = json.loads(bytes(self.tree_blob.tolist()).decode())
        self.nodes, self.titles = data["nodes"], data["titles"]
        self.parent = {c: n for n, node in enumerate(self.nodes) for c in node["children"]}

    def _depth(self, n: int = 0) -> int:
        return (
            1 + max((self._depth(c) for c in self.nodes[n]["children"]), default=0)
            if n
            else max((self._depth(c) for c in self.nodes[0]["children"]), default=0)
        )

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        for name in self._data_buffers:
            if name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[name]))
        out = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self._restore()
        return out

    # -- the walk -------------------------------------------------------------------------------------------
    def _title(self, item: int) -> str:
        return " ".join(self.titles[item - 1].split()[: self.cfg.title_words])

    def _prompt(self, history: list[int], node: int) -> str:
        labels = ", ".join(self.nodes[c]["label"] for c in self.nodes[node]["children"])
        where = self._path_text(node)
        lines = []
        if history:
            lines.append("A shopper recently bought:")
            lines += [f"- {self._title(i)}" for i in history]
        else:
            lines.append("A shopper is browsing the catalogue.")
        if where:
            lines.append(f"Current category: {where}.")
        lines.append(f"Categories: {labels}.")
        lines.append("The category of the shopper's next purchase is:")
        return "\n".join(lines)

    def _path_text(self, node: int) -> str:
        path = []
        while node:
            path.append(self.nodes[node]["label"])
            node = self.parent[node]
        return " > ".join(reversed(path))

    def _child_logprobs(self, history: list[int], node: int) -> np.ndarray:
        children = self.nodes[node]["children"]
        options = [" " + self.nodes[c]["label"] for c in children]
        scores = self.llm.choice_logprobs(self._prompt(history, node), options)
        if self.cfg.scoring == "pmi":
            scores = scores - self.llm.choice_logprobs(self._prompt([], node), options)
        scores = scores - scores.max()
        return scores - np.log(np.exp(scores).sum())

    def leaves_for(self, history: list[int]) -> list[tuple[float, int]]:
        """The beam's leaves for one history (item ids, oldest first): [(path log-prob, node)], best first."""
        beam = [(0.0, 0)]
        while any(self.nodes[n]["children"] for _, n in beam):
            grown = []
            for score, n in beam:
                children = self.nodes[n]["children"]
                if not children:
                    grown.append((score, n))
                elif len(children) == 1:
                    grown.append((score, children[0]))
                else:
                    lp = self._child_logprobs(history, n)
                    grown += [(score + float(v), c) for v, c in zip(lp, children)]
            grown.sort(key=lambda x: (-x[0], x[1]))  # ties: node order, so the walk is deterministic
            beam = grown[: self.cfg.beam]
        return beam

    def _order(self, candidates: np.ndarray, history: list[int]) -> np.ndarray:
        """Candidates by the within-leaf rule, best first (popularity, then id, break ties)."""
        pop = self.counts.numpy()[candidates]
        if self.cfg.within_leaf == "similarity" and history:
            query = self.item_vectors[history].mean(0).numpy()
            sim = self.item_vectors.numpy()[candidates] @ query
            return candidates[np.lexsort((candidates, -pop, -sim))]
        return candidates[np.lexsort((candidates, -pop))]

    @torch.no_grad()
    def recommend(self, batch: HistoryBatch, k: int, exclude: torch.Tensor | None = None):
        if not self.nodes:
            raise ConfigError("llm_tree has no item tree: fit it (prepare) or load a run")
        k = min(k, self.n_items)
        ids = torch.zeros(len(batch.items), k, dtype=torch.long)
        scores = torch.full((len(batch.items), k), float("-inf"))
        for row, items in enumerate(batch.items.tolist()):
            history = [i for i in items if i > 0][-self.cfg.history_items :]
            banned = set() if exclude is None else set(exclude[row].tolist()) - {0}
            chosen = np.asarray(
                [i for _, n in self.leaves_for(history) for i in self.nodes[n]["items"] if i not in banned],
                dtype=np.int64,
            )
            listed = list(self._order(chosen, history)[:k])
            if len(listed) < k:  # the chosen leaves ran short: the rest of the catalogue, same rule
                taken = banned | set(listed)
                rest = np.asarray([i for i in range(1, self.n_items + 1) if i not in taken], dtype=np.int64)
                listed += list(self._order(rest, history)[: k - len(listed)])
            ids[row, : len(listed)] = torch.tensor(listed, dtype=torch.long)
            scores[row, : len(listed)] = -torch.arange(len(listed), dtype=torch.float32)
        return ids, scores
