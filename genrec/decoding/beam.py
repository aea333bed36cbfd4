"""Constrained beam search over semantic IDs: a prefix trie of the valid codes in CSR form, and a beam search
that only ever extends a prefix with a code that leads to a real item.

Everything runs on whole tensors: the valid next codes of all beams of all users are gathered from the CSR arrays
in one step per code level (no Python loop over beams or users), so decoding cost is a few tensor operations per
level plus the model's own forward pass.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch


class CodeTrie:
    """Trie of the code tuples of all items. Nodes at depth d are the distinct prefixes of length d, numbered in
    lexicographic order; the edges leaving depth d are the distinct prefixes of length d + 1, so an edge's index is
    also the id of the child it leads to. For depth d: `offsets[d]` ([nodes_d + 1]) delimits each node's edges in
    `edge_code[d]` (sorted by code). `leaf_item[j]` is the item whose full code is leaf j; `item_leaf[i]` is item
    i's leaf (-1 for ids not in the trie). The leaves under node j of depth d + 1 are the contiguous range
    `leaf_lo[d][j] .. leaf_hi[d][j] - 1` (lexicographic numbering keeps every subtree contiguous)."""

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

    def child(self, nodes: torch.Tensor, depth: int, codes: torch.Tensor) -> torch.Tensor:
        """The node reached from `nodes` ([M] ids at `depth`) by `codes` ([M]); -1 where that code leads to no
        item (or the node is -1): walks a generated code prefix down the trie."""
        if not hasattr(self, "_edge_key"):
            # Edges are numbered parent-major, codes sorted within a parent: parent * S + code is sorted.
            self._stride = max(self.sizes) + 1
            self._edge_key = [
                torch.repeat_interleave(torch.arange(len(o) - 1), o[1:] - o[:-1]) * self._stride + c
                for o, c in zip(self.offsets, self.edge_code)
            ]
        keys = self._edge_key[depth]
        ok = (nodes >= 0) & (codes >= 0) & (codes < self.sizes[depth])
        want = nodes.clamp(min=0) * self._stride + codes.clamp(0, self.sizes[depth] - 1)
        pos = torch.searchsorted(keys, want).clamp(max=len(keys) - 1)
        return torch.where(ok & (keys[pos] == want), pos, -1)

    def excluded_leaves(self, exclude: torch.Tensor) -> torch.Tensor:
        """[B, M] excluded item ids (0 = none) -> sorted unique keys `user * (leaves + 1) + leaf` of the excluded
        items that are in this trie, for `alive`."""
        ids = exclude.clamp(min=0)
        inside = ids < len(self.item_leaf)
        leaf = torch.where(inside, self.item_leaf[ids.clamp(max=len(self.item_leaf) - 1)], -1)
        leaf = torch.where(exclude > 0, leaf, -1)
        key = torch.arange(len(exclude))[:, None] * (len(self.leaf_item) + 1) + leaf
        return torch.unique(key[leaf >= 0])

    def alive(
        self, excluded: torch.Tensor, user: torch.Tensor, child: torch.Tensor, depth: int
    ) -> torch.Tensor:
        """Whether node `child` ([E] ids at depth `depth` + 1) still has a leaf that user `user` ([E]) has not
        excluded (`excluded` from `excluded_leaves`): a prefix whose whole subtree is excluded leads nowhere."""
        lo, hi = self.leaf_lo[depth][child], self.leaf_hi[depth][child]
        base = user * (len(self.leaf_item) + 1)
        gone = torch.searchsorted(excluded, base + hi) - torch.searchsorted(excluded, base + lo)
        return hi - lo > gone

    def expand(self, nodes: torch.Tensor, depth: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """All edges leaving `nodes` (flat [M] ids at `depth`): (row in `nodes`, code, child id), each [E]."""
        offsets = self.offsets[depth]
        start = offsets[nodes]
        degree = offsets[nodes + 1] - start
        row = torch.repeat_interleave(torch.arange(len(nodes)), degree)
        first_of_row = torch.repeat_interleave(torch.cumsum(degree, 0) - degree, degree)
        edge = start[row] + torch.arange(len(row)) - first_of_row
        return row, self.edge_code[depth][edge], edge


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
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-k items per user by beam search restricted to the trie -> (items [B, k], log-prob [B, k], codes
    [B, k, depth]). `exclude` ([B, M] item ids, 0 = none) removes items: at every level a prefix whose whole
    subtree is excluded is pruned, so the beams only follow prefixes that still lead to an allowed item and, with
    beam >= k, the result holds min(k, items left) distinct items whenever the model scores them (a NaN
    log-probability prunes its prefix too). Slots that no valid beam reached hold item 0 and score -inf.
    `reorder(origin)`, if given, is told after each level but the last which earlier beam each kept beam
    extends ([B, W] indices), so a caller can reorder its decoder cache."""
    beam = max(beam, k)
    neg_inf = float("-inf")
    scores = torch.zeros(batch, 1)
    nodes = torch.zeros(batch, 1, dtype=torch.long)
    prefix = torch.zeros(batch, 1, 0, dtype=torch.long)
    excluded = trie.excluded_leaves(exclude) if exclude is not None else None
    for d in range(trie.depth):
        width, size = nodes.shape[1], trie.sizes[d]
        logp = step(prefix, d).float().reshape(batch * width, size)
        row, code, child = trie.expand(nodes.reshape(-1), d)
        value = scores.reshape(-1)[row] + logp[row, code]
        value = value.masked_fill(value.isnan(), neg_inf)
        if excluded is not None and len(excluded):
            user = torch.div(row, width, rounding_mode="floor")
            value = value.masked_fill(~trie.alive(excluded, user, child, d), neg_inf)
        cand = torch.full((batch * width, size), neg_inf)
        cand[row, code] = value
        child_of = torch.zeros(batch * width, size, dtype=torch.long)
        child_of[row, code] = child
        keep = min(beam if d < trie.depth - 1 else k, width * size)
        top = torch.topk(cand.view(batch, width * size), keep, dim=1)
        src, new_code = top.indices // size, top.indices % size
        scores = top.values
        nodes = child_of.view(batch, width * size).gather(1, top.indices)
        prefix = torch.cat([prefix.gather(1, src[..., None].expand(-1, -1, d)), new_code[..., None]], 2)
        dead = torch.isinf(scores)
        nodes = nodes.masked_fill(dead, 0)  # dead slots follow node 0; their score stays -inf
        if reorder is not None and d < trie.depth - 1:
            reorder(src)
    items = trie.leaf_item[nodes].masked_fill(torch.isinf(scores), 0)
    if items.shape[1] < k:  # tiny catalogues: pad to k
        pad = k - items.shape[1]
        items = torch.cat([items, torch.zeros(batch, pad, dtype=torch.long)], 1)
        scores = torch.cat([scores, torch.full((batch, pad), neg_inf)], 1)
        prefix = torch.cat([prefix, torch.zeros(batch, pad, trie.depth, dtype=torch.long)], 1)
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
    scores = torch.zeros(batch, 1)
    nodes = torch.zeros(batch, 1, dtype=torch.long)
    prefix = torch.zeros(batch, 1, 0, dtype=torch.long)
    emitted = torch.zeros(batch, 1, 0, dtype=torch.long)
    excluded, anchor = (
        None,
        None,
    )  # excluded keys of the beams at the current item's start; each beam's row there
    for t in range(length * depth):
        d, width, size = t % depth, nodes.shape[1], trie.sizes[t % depth]
        if d == 0:
            rows = [emitted.reshape(batch * width, -1)]
            if exclude is not None:
                rows.insert(0, exclude.repeat_interleave(width, 0))
            banned = torch.cat(rows, 1)
            excluded = trie.excluded_leaves(banned) if banned.shape[1] else None
            anchor = torch.arange(batch * width).view(batch, width)
        logp = step(prefix, t).float().reshape(batch * width, size)
        row, code, child = trie.expand(nodes.reshape(-1), d)
        value = scores.reshape(-1)[row] + logp[row, code]
        value = value.masked_fill(value.isnan(), neg_inf)
        if excluded is not None and len(excluded):
            owner = anchor.reshape(-1)[row]
            value = value.masked_fill(~trie.alive(excluded, owner, child, d), neg_inf)
        cand = torch.full((batch * width, size), neg_inf)
        cand[row, code] = value
        child_of = torch.zeros(batch * width, size, dtype=torch.long)
        child_of[row, code] = child
        top = torch.topk(cand.view(batch, width * size), min(beam, width * size), dim=1)
        src, new_code = top.indices // size, top.indices % size
        scores = top.values
        dead = torch.isinf(scores)
        nodes = child_of.view(batch, width * size).gather(1, top.indices).masked_fill(dead, 0)
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
        emitted = torch.cat([emitted, torch.zeros(batch, pad, length, dtype=torch.long)], 1)
        scores = torch.cat([scores, torch.full((batch, pad), neg_inf)], 1)
    return emitted, scores
