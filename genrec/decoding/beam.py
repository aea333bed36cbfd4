"""Constrained beam search over semantic IDs: a prefix trie of the valid codes in CSR form, and a beam search
that only ever extends a prefix with a code that leads to a real item.

Everything runs on whole tensors: the edges leaving every beam's node are gathered from a table that lists each
node's edges padded to the level's largest out-degree, in one step per code level (no Python loop over beams or
users), so decoding cost is a few tensor operations per level plus the model's own forward pass. Every shape
depends on the batch, the beam and the trie, never on the scores, so nothing waits for the device (no host reads).

The trie is built on the host, from the item codes; the beam search moves it once to the device its scores come
from (`CodeTrie.to`, cached per device).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch


class CodeTrie:
    """Trie of the code tuples of all items. Nodes at depth d are the distinct prefixes of length d, numbered in
    lexicographic order; the edges leaving depth d are the distinct prefixes of length d + 1, so an edge's index is
    also the id of the child it leads to. For depth d: `offsets[d]` ([nodes_d + 1]) delimits each node's edges in
    `edge_code[d]` (sorted by code). `leaf_item[j]` is the item whose full code is leaf j; `item_leaf[i]` is item
    i's leaf (-1 for ids not in the trie). The leaves under node j of depth d + 1 are the contiguous range
    `leaf_lo[d][j] .. leaf_hi[d][j] - 1` (lexicographic numbering keeps every subtree contiguous). `edge_key[d]`
    holds each edge's `parent * stride + code`, sorted (edges are numbered parent-major, codes sorted within a
    parent), so a (node, code) pair finds its edge by binary search; `edges[d]` ([nodes_d, max out-degree])
    lists each node's edges, -1 after the last."""

    def __init__(self, codes: np.ndarray, sizes: list[int], item_ids: np.ndarray | None = None) -> None:
        codes = np.asarray(codes, dtype=np.int64)
        n, depth = codes.shape
        self.sizes = list(sizes)
        self.depth = depth
        item_ids = np.arange(1, n + 1) if item_ids is None else np.asarray(item_ids)
        parent = np.zeros(n, dtype=np.int64)  # node of each item at the current depth (root = 0)
        n_nodes = 1
        self.offsets, self.edge_code = [], []
        node_of = []  # per depth d: each item's node at depth d + 1
        for d in range(depth):
            _, first, child = np.unique(codes[:, : d + 1], axis=0, return_index=True, return_inverse=True)
            child = child.reshape(-1)
            edge_parent = parent[first]
            counts = np.bincount(edge_parent, minlength=n_nodes)
            offsets = np.zeros(n_nodes + 1, dtype=np.int64)
            np.cumsum(counts, out=offsets[1:])
            self.offsets.append(torch.from_numpy(offsets))
            self.edge_code.append(torch.from_numpy(codes[first, d]))
            node_of.append(child)
            parent, n_nodes = child, len(first)
        if n_nodes != n:
            raise ValueError(f"{n - n_nodes} items share a full code; separate collisions first")
        leaf_item = np.zeros(n, dtype=np.int64)
        leaf_item[parent] = item_ids
        self.leaf_item = torch.from_numpy(leaf_item)
        item_leaf = np.full(int(item_ids.max(initial=0)) + 1, -1, dtype=np.int64)
        item_leaf[item_ids] = parent
        self.item_leaf = torch.from_numpy(item_leaf)
        self.leaf_lo, self.leaf_hi = [], []
        for nodes in node_of:
            lo = np.full(nodes.max(initial=-1) + 1, n, dtype=np.int64)
            hi = np.zeros(len(lo), dtype=np.int64)
            np.minimum.at(lo, nodes, parent)
            np.maximum.at(hi, nodes, parent + 1)
            self.leaf_lo.append(torch.from_numpy(lo))
            self.leaf_hi.append(torch.from_numpy(hi))
        self.edges = []
        for o in self.offsets:
            degree = np.diff(o.numpy())
            slot = np.arange(max(1, int(degree.max(initial=0))))[None]
            self.edges.append(
                torch.from_numpy(np.where(slot < degree[:, None], o.numpy()[:-1, None] + slot, -1))
            )
        self.stride = max(self.sizes) + 1
        self.edge_key = [
            torch.from_numpy(np.repeat(np.arange(len(o) - 1), np.diff(o.numpy())) * self.stride + c.numpy())
            for o, c in zip(self.offsets, self.edge_code)
        ]
        self._on = {torch.device("cpu"): self}

    def to(self, device: torch.device | str) -> CodeTrie:
        """This trie with its tables on `device` (made once per device, then reused)."""
        device = torch.device(device)
        if device not in self._on:
            moved = copy.copy(self)
            for name, value in vars(self).items():
                if isinstance(value, torch.Tensor):
                    setattr(moved, name, value.to(device))
                elif isinstance(value, list) and value and isinstance(value[0], torch.Tensor):
                    setattr(moved, name, [t.to(device) for t in value])
            self._on[device] = moved
        return self._on[device]

    @property
    def device(self) -> torch.device:
        return self.leaf_item.device

    def child(self, nodes: torch.Tensor, depth: int, codes: torch.Tensor) -> torch.Tensor:
        """The node reached from `nodes` ([M] ids at `depth`) by `codes` ([M]); -1 where that code leads to no
        item (or the node is -1): walks a generated code prefix down the trie. `nodes` and `codes` broadcast:
        `child(nodes[:, None], d, all_codes[None])` gives every child of every node ([M, size])."""
        keys = self.edge_key[depth]
        ok = (nodes >= 0) & (codes >= 0) & (codes < self.sizes[depth])
        want = nodes.clamp(min=0) * self.stride + codes.clamp(0, self.sizes[depth] - 1)
        pos = torch.searchsorted(keys, want.contiguous()).clamp(max=len(keys) - 1)
        return torch.where(ok & (keys[pos] == want), pos, -1)

    def out_edges(
        self,
        nodes: torch.Tensor,
        depth: int,
        excluded: torch.Tensor | None = None,
        owner: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The edges leaving `nodes` ([R] ids at `depth`, -1 = none), padded: (child ids [R, D], their codes
        [R, D], whether each is a real edge [R, D]); with `excluded` (keys from `excluded_leaves`) and `owner`
        ([R] the user of each node), an edge whose whole subtree the user excluded is not real either."""
        edge = self.edges[depth][nodes.clamp(min=0)]
        real = (edge >= 0) & (nodes >= 0)[:, None]
        edge = edge.clamp(min=0)
        if excluded is not None and len(excluded):
            real &= self.alive(excluded, owner[:, None].expand_as(edge), edge, depth)
        return edge, self.edge_code[depth][edge], real

    def excluded_leaves(self, exclude: torch.Tensor) -> torch.Tensor:
        """[B, M] excluded item ids (0 = none) -> sorted keys `user * (leaves + 1) + leaf` of the excluded items
        that are in this trie, each once, for `alive`; the other places hold -1 (below every key), so the shape is
        [B * M] whatever the data."""
        ids = exclude.clamp(min=0)
        inside = ids < len(self.item_leaf)
        leaf = torch.where(inside, self.item_leaf[ids.clamp(max=len(self.item_leaf) - 1)], -1)
        leaf = torch.where(exclude > 0, leaf, -1)
        users = torch.arange(len(exclude), device=exclude.device)[:, None]
        key = torch.where(leaf >= 0, users * (len(self.leaf_item) + 1) + leaf, -1).flatten().sort().values
        repeat = torch.cat([key.new_zeros(min(1, len(key)), dtype=torch.bool), key[1:] == key[:-1]])
        return key.masked_fill(repeat, -1).sort().values

    def alive(
        self, excluded: torch.Tensor, user: torch.Tensor, child: torch.Tensor, depth: int
    ) -> torch.Tensor:
        """Whether node `child` ([E] ids at depth `depth` + 1) still has a leaf that user `user` ([E]) has not
        excluded (`excluded` from `excluded_leaves`): a prefix whose whole subtree is excluded leads nowhere."""
        lo, hi = self.leaf_lo[depth][child], self.leaf_hi[depth][child]
        base = user * (len(self.leaf_item) + 1)
        gone = torch.searchsorted(excluded, base + hi) - torch.searchsorted(excluded, base + lo)
        return hi - lo > gone

    def step(
        self,
        scores: torch.Tensor,
        logp: torch.Tensor,
        nodes: torch.Tensor,
        depth: int,
        excluded: torch.Tensor | None,
        owner: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One level of a constrained search over R beams, on each beam's padded out-edges: (candidate scores
        [R, D], codes [R, D], child ids [R, D]). A candidate scores its beam's score (`scores` [R]) plus its
        code's log-probability (`logp` [R, size]), or -inf for a padding slot, a NaN log-probability, or a child
        whose every item is excluded for the beam's user (`owner` [R], keys in `excluded`)."""
        child, code, real = self.out_edges(nodes, depth, excluded, owner)
        value = scores[:, None] + logp.gather(1, code)
        return value.masked_fill(~real | value.isnan(), float("-inf")), code, child


# step(prefix [B, W, t] codes so far, t) -> log-probabilities [B, W, sizes[t]] of the next code
StepFn = Callable[[torch.Tensor, int], torch.Tensor]


@torch.no_grad()
def constrained_beam_search(
    step: StepFn,
    trie: CodeTrie,
    batch: int,
    beam: int,
    k: int,
    exclude: torch.Tensor | None = None,
    reorder: Callable[[torch.Tensor], None] | None = None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-k items per user by beam search restricted to the trie -> (items [B, k], log-prob [B, k], codes
    [B, k, depth]). `exclude` ([B, M] item ids, 0 = none) removes items: at every level a prefix whose whole
    subtree is excluded is pruned, so the beams only follow prefixes that still lead to an allowed item and, with
    beam >= k, the result holds min(k, items left) distinct items whenever the model scores them (a NaN
    log-probability prunes its prefix too). Slots that no valid beam reached hold item 0 and score -inf.
    `reorder(origin)`, if given, is told after each level but the last which earlier beam each kept beam
    extends ([B, W] indices), so a caller can reorder its decoder cache. The search runs on `device` (default:
    `exclude`'s, else the CPU), where `step` must return its log-probabilities."""
    beam = max(beam, k)
    neg_inf = float("-inf")
    device = _search_device(device, exclude)
    trie = trie.to(device)
    scores = torch.zeros(batch, 1, device=device)
    nodes = torch.zeros(batch, 1, dtype=torch.long, device=device)
    prefix = torch.zeros(batch, 1, 0, dtype=torch.long, device=device)
    excluded = trie.excluded_leaves(exclude.to(device)) if exclude is not None else None
    for d in range(trie.depth):
        logp = step(prefix, d).float()
        width, size = nodes.shape[1], trie.sizes[d]
        owner = torch.arange(batch, device=device).repeat_interleave(width)
        cand, code, child = trie.step(
            scores.reshape(-1), logp.reshape(batch * width, size), nodes.reshape(-1), d, excluded, owner
        )
        slots = cand.shape[1]
        keep = min(beam if d < trie.depth - 1 else k, width * slots)
        top = torch.topk(cand.view(batch, width * slots), keep, dim=1)
        src = top.indices // slots
        new_code = code.view(batch, width * slots).gather(1, top.indices)
        scores = top.values
        nodes = child.view(batch, width * slots).gather(1, top.indices)
        prefix = torch.cat([prefix.gather(1, src[..., None].expand(-1, -1, d)), new_code[..., None]], 2)
        dead = torch.isinf(scores)
        nodes = nodes.masked_fill(dead, 0)  # dead slots follow node 0; their score stays -inf
        if reorder is not None and d < trie.depth - 1:
            reorder(src)
    items = trie.leaf_item[nodes].masked_fill(torch.isinf(scores), 0)
    if items.shape[1] < k:  # tiny catalogues: pad to k
        pad = k - items.shape[1]
        items = torch.cat([items, items.new_zeros(batch, pad)], 1)
        scores = torch.cat([scores, scores.new_full((batch, pad), neg_inf)], 1)
        prefix = torch.cat([prefix, prefix.new_zeros(batch, pad, trie.depth)], 1)
    return items, scores, prefix


@torch.no_grad()
def constrained_session_search(
    step: StepFn,
    trie: CodeTrie,
    batch: int,
    beam: int,
    length: int,
    exclude: torch.Tensor | None = None,
    reorder: Callable[[torch.Tensor], None] | None = None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-`beam` sessions of `length` distinct items per user, by one beam search over all length x depth codes
    -> (items [B, beam, length], summed log-prob [B, beam]), best first.

    Each item's codes follow the trie (every item is real) and an item cannot come twice in a session: at each
    item's first level the items a beam already emitted join `exclude` ([B, M] item ids, 0 = none) as that beam's
    excluded items, and, as in `constrained_beam_search`, a prefix whose whole subtree is excluded is pruned. So
    every session holds `length` distinct allowed items whenever that many remain; a slot no beam could fill holds
    item 0 and its session scores -inf. `step(prefix [B, W, t], t)` returns the log-probabilities of level
    t % depth's codes given all earlier codes of the session; `reorder(origin [B, W])` as in
    `constrained_beam_search`, after every step but the last. With length 1 this is `constrained_beam_search`
    keeping `beam` items."""
    depth = trie.depth
    neg_inf = float("-inf")
    device = _search_device(device, exclude)
    trie = trie.to(device)
    scores = torch.zeros(batch, 1, device=device)
    nodes = torch.zeros(batch, 1, dtype=torch.long, device=device)
    prefix = torch.zeros(batch, 1, 0, dtype=torch.long, device=device)
    emitted = torch.zeros(batch, 1, 0, dtype=torch.long, device=device)
    exclude = exclude.to(device) if exclude is not None else None
    # excluded keys of the beams at the current item's start, and each beam's row there
    excluded, anchor = None, None
    for t in range(length * depth):
        logp = step(prefix, t).float()
        d, width, size = t % depth, nodes.shape[1], trie.sizes[t % depth]
        if d == 0:
            rows = [emitted.reshape(batch * width, -1)]
            if exclude is not None:
                rows.insert(0, exclude.repeat_interleave(width, 0))
            banned = torch.cat(rows, 1)
            excluded = trie.excluded_leaves(banned) if banned.shape[1] else None
            anchor = torch.arange(batch * width, device=device).view(batch, width)
        owner = anchor.reshape(-1)
        cand, code, child = trie.step(
            scores.reshape(-1), logp.reshape(batch * width, size), nodes.reshape(-1), d, excluded, owner
        )
        slots = cand.shape[1]
        top = torch.topk(cand.view(batch, width * slots), min(beam, width * slots), dim=1)
        src = top.indices // slots
        new_code = code.view(batch, width * slots).gather(1, top.indices)
        scores = top.values
        dead = torch.isinf(scores)
        nodes = child.view(batch, width * slots).gather(1, top.indices).masked_fill(dead, 0)
        prefix = torch.cat([prefix.gather(1, src[..., None].expand(-1, -1, t)), new_code[..., None]], 2)
        emitted = emitted.gather(1, src[..., None].expand(-1, -1, emitted.shape[2]))
        anchor = anchor.gather(1, src)
        if d == depth - 1:  # an item is complete: record it, the next one starts from the root
            item = trie.leaf_item[nodes].masked_fill(dead, 0)
            emitted = torch.cat([emitted, item[..., None]], 2)
            nodes = torch.zeros_like(nodes)
        if reorder is not None and t < length * depth - 1:
            reorder(src)
    emitted = emitted.masked_fill(torch.isinf(scores)[..., None], 0)
    if emitted.shape[1] < beam:  # tiny catalogues: pad to `beam` sessions
        pad = beam - emitted.shape[1]
        emitted = torch.cat([emitted, emitted.new_zeros(batch, pad, length)], 1)
        scores = torch.cat([scores, scores.new_full((batch, pad), neg_inf)], 1)
    return emitted, scores


def _search_device(device, exclude: torch.Tensor | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return exclude.device if exclude is not None else torch.device("cpu")
