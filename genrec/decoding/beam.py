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
    `edge_code[d]` (sorted by code). `leaf_item[j]` is the item whose full code is leaf j."""

    def __init__(self, codes: np.ndarray, sizes: list[int], item_ids: np.ndarray | None = None) -> None:
        codes = np.asarray(codes, dtype=np.int64)
        n, depth = codes.shape
        self.sizes = list(sizes)
        self.depth = depth
        item_ids = np.arange(1, n + 1) if item_ids is None else np.asarray(item_ids)
        parent = np.zeros(n, dtype=np.int64)  # node of each item at the current depth (root = 0)
        n_nodes = 1
        self.offsets, self.edge_code = [], []
        for d in range(depth):
            _, first, child = np.unique(codes[:, : d + 1], axis=0, return_index=True, return_inverse=True)
            child = child.reshape(-1)
            edge_parent = parent[first]
            counts = np.bincount(edge_parent, minlength=n_nodes)
            offsets = np.zeros(n_nodes + 1, dtype=np.int64)
            np.cumsum(counts, out=offsets[1:])
            self.offsets.append(torch.from_numpy(offsets))
            self.edge_code.append(torch.from_numpy(codes[first, d]))
            parent, n_nodes = child, len(first)
        if n_nodes != n:
            raise ValueError(f"{n - n_nodes} items share a full code; separate collisions first")
        leaf_item = np.zeros(n, dtype=np.int64)
        leaf_item[parent] = item_ids
        self.leaf_item = torch.from_numpy(leaf_item)

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
    [B, k, depth]). `exclude` ([B, M] item ids, 0 = none) removes items at the last level. Slots that no valid
    beam reached hold item 0 and score -inf. `reorder(origin)`, if given, is told after each level but the last
    which earlier beam each kept beam extends ([B, W] indices), so a caller can reorder its decoder cache."""
    beam = max(beam, k)
    neg_inf = float("-inf")
    scores = torch.zeros(batch, 1)
    nodes = torch.zeros(batch, 1, dtype=torch.long)
    prefix = torch.zeros(batch, 1, 0, dtype=torch.long)
    for d in range(trie.depth):
        width, size = nodes.shape[1], trie.sizes[d]
        logp = step(prefix, d).float().reshape(batch * width, size)
        row, code, child = trie.expand(nodes.reshape(-1), d)
        value = scores.reshape(-1)[row] + logp[row, code]
        if exclude is not None and d == trie.depth - 1:
            items = trie.leaf_item[child]
            user = torch.div(row, width, rounding_mode="floor")
            value = value.masked_fill((exclude[user] == items[:, None]).any(1), neg_inf)
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
