"""RPG: long semantic IDs predicted in parallel (Hou et al., "Generating Long Semantic IDs in Parallel for
Recommendation", KDD 2025, https://arxiv.org/abs/2506.05781).

Each item is a long tuple of codes (`model.tokenizer`, by default OPQ: `levels` = 32 sub-spaces of 256 codes
over the item text embedding; see `genrec.items.semantic_ids`). The codes of a product quantiser are unordered,
so instead of generating them one after another (TIGER) RPG predicts all of them at once:

- item embedding [d] = mean of its codes' embeddings (one table of `levels` x `codebook_size` code embeddings);
- a causal transformer reads the history's item embeddings (right-aligned, learned positions) -> h [B, L, d];
- a multi-token prediction head per code level, h + SiLU(W_l h) (zero-initialised, so it starts as the
  identity), gives [B, L, levels, d]; the logit of code c at level l is cos(head_l, embedding of c) / temperature,
  and training minimises the cross-entropy of the next item's codes, averaged over levels, at every position;
- an item's score is the sum over levels of its codes' log-probabilities, log p(item | history) when the levels
  are taken as independent, as the paper's parallel decoding does.

Decoding (`decoding`) returns only real items:
- `exact` (the default): every item scored from its codes ([B, n_items + 1] in `levels` gathers), exact top-K.
  On catalogues of tens of thousands of items this costs about one SASRec full-catalogue scoring.
- `graph`: the paper's graph-constrained decoding. Items are nodes linked to their `graph_edges` most similar
  items (similarity = mean over levels of the cosine between their codes' embeddings, mapped to [0, 1]); from
  `graph_beams` start items, each of `graph_steps` steps scores the neighbours of the current beam and keeps the
  best `graph_beams`. Only the visited items are scored.

Deviations from the paper and its code: positions are right-aligned and the transformer is genrec's pre-norm block
(GPT-2 in the paper), with the pooled item vector scaled by sqrt(levels) and positions initialised at N(0, 0.02)
so that positions do not drown the item content; dropout on the item embeddings (`dropout`, the paper's
embd_pdrop) and on the blocks (`block_dropout`, the paper's attention dropout as residual dropout); graph
decoding starts from one fixed random set of items (seeded) for every user, so a user's list does not depend on
the batch it is in, returns the best K of all visited items rather than of the last beam, and removes excluded
items from that list only (they may still lead the walk to their neighbours); with `tokenizer.collisions:
separate` the separation code is one more level predicted like the others (its table has `codebook_size`
entries).

Shapes: a history batch holds items [B, L] (0 = padding on the left); `score` returns [B, n_items + 1] (column
0 is -inf); `recommend` returns ids and scores [B, k], best first, never an excluded, padding or repeated item.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from genrec.config.models.rpg import RPGConfig
from genrec.data.batching import HistoryBatch, length_bucketed_batches, pad_left
from genrec.data.split import Split
from genrec.errors import ConfigError, DataError
from genrec.items.semantic_ids import SemanticIds, prepared_outputs, run_semantic_ids
from genrec.items.text import item_texts
from genrec.models.base import Recommender, Resources, candidate_scores, register
from genrec.nn.transformer import TransformerBlock, causal_padding_mask


@register
class RPG(Recommender):
    config_class = RPGConfig
    capabilities = frozenset({"score", "log_likelihood"})
    trainable = True

    def __init__(self, cfg: RPGConfig, n_items: int, n_users: int) -> None:
        super().__init__(cfg, n_items, n_users)
        tk = cfg.tokenizer
        if cfg.dim % cfg.heads:
            raise ConfigError(f"model.dim ({cfg.dim}) must be a multiple of model.heads ({cfg.heads})")
        if cfg.decoding == "graph":  # a generated list: the evaluator scores it instead of every item
            self.capabilities = frozenset({"generate", "log_likelihood"})
        self.levels = tk.levels + (1 if tk.collisions == "separate" else 0)
        self.codebook = tk.codebook_size
        # Token of level l's code c: 1 + l * codebook + c; token 0 pads (the padding item is all padding).
        self.register_buffer("item_tokens", torch.zeros(n_items + 1, self.levels, dtype=torch.long))
        self.code_emb = nn.Embedding(1 + self.levels * self.codebook, cfg.dim, padding_idx=0)
        nn.init.normal_(self.code_emb.weight, std=cfg.dim**-0.5)
        with torch.no_grad():
            self.code_emb.weight[0].zero_()
        # Small positions (GPT-2's 0.02): at PyTorch's default N(0, 1) they would drown the pooled item vectors.
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.dim)
        nn.init.normal_(self.pos_emb.weight, std=0.02)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(cfg.dim, cfg.heads, cfg.block_dropout, cfg.ffn_mult) for _ in range(cfg.layers)
        )
        self.final_norm = nn.LayerNorm(cfg.dim)
        # One residual block per level, h + SiLU(W_l h + b_l), zero-initialised: every head starts as h itself.
        self.head_weight = nn.Parameter(torch.zeros(self.levels, cfg.dim, cfg.dim))
        self.head_bias = nn.Parameter(torch.zeros(self.levels, cfg.dim))
        self._graph = None  # (neighbours [n_items + 1, edges], start items [beams]), built on first use

    # --- semantic IDs --------------------------------------------------------------------------------------------

    def set_semantic_ids(self, sid: SemanticIds) -> None:
        """Take the items' codes ([n_items, levels]). Raises DataError / ConfigError when they do not fit."""
        if sid.n_items != self.n_items or sid.depth != self.levels:
            raise DataError(
                f"semantic IDs are {sid.n_items} x {sid.depth}, the model needs {self.n_items} x {self.levels}"
            )
        if max(sid.sizes) > self.codebook:
            raise ConfigError(
                f"{sid.sizes[-1]} items share one code: more than model.tokenizer.codebook_size "
                f"({self.codebook}); use tokenizer.collisions=reassign"
            )
        codes = torch.from_numpy(sid.codes).to(self.item_tokens.device)
        offsets = 1 + torch.arange(self.levels, device=codes.device) * self.codebook
        self.item_tokens[1:] = codes + offsets
        self._graph = None

    def item_codes(self) -> torch.Tensor:
        """[n_items + 1, levels] level-local codes (row 0, padding, is all 0)."""
        offsets = 1 + torch.arange(self.levels, device=self.item_tokens.device) * self.codebook
        return (self.item_tokens - offsets).clamp(min=0)

    def prepare(self, split: Split, resources: Resources) -> dict:
        """Build (or load, `tokenizer.codes`) the items' codes; pq / opq codebooks are fitted on the items of the
        training sequences, then every item (cold ones included) is encoded."""
        items = resources.item_table(self.cfg.name)
        tk = self.cfg.tokenizer
        if tk.input != "collab" and not tk.codes and sum(map(bool, item_texts(items))) < len(items) / 2:
            # Codes of empty texts would all be alike: say so before any work rather than train on them.
            raise ConfigError(
                "rpg: most items of this dataset have no text; build the codes from co-occurrences with "
                "--set model.tokenizer.input=collab --set model.tokenizer.collab=cooccurrence"
            )
        sid = run_semantic_ids(
            self.cfg.tokenizer,
            items,
            split.sequences.item_ids,
            resources.collab_embeddings,
            split.train,
        )
        self.set_semantic_ids(sid)
        return prepared_outputs(sid)

    # --- network -------------------------------------------------------------------------------------------------

    def item_embeddings(self, items: torch.Tensor) -> torch.Tensor:
        """[...] item ids -> [..., d]: the mean of each item's code embeddings (zeros for padding), times
        sqrt(levels) so that the mean of independent codes keeps the norm of one code embedding."""
        tokens = self.item_tokens[items.reshape(-1)]
        pooled = F.embedding_bag(tokens, self.code_emb.weight, mode="mean", padding_idx=0)
        return pooled.reshape(*items.shape, -1) * self.levels**0.5

    def encode(self, items: torch.Tensor) -> torch.Tensor:
        """History [B, L] (right-aligned) -> hidden states [B, L, d]; position t reads items <= t."""
        items = items[:, -self.cfg.max_len :]
        length = items.shape[1]
        pos = torch.arange(self.cfg.max_len - length, self.cfg.max_len, device=items.device)
        x = self.drop((self.item_embeddings(items) + self.pos_emb(pos)[None]) * (items > 0)[..., None])
        mask = causal_padding_mask(items)
        for block in self.blocks:
            x = block(x, mask)
        return self.final_norm(x).float()

    def code_logits_of(self, hidden: torch.Tensor) -> torch.Tensor:
        """Hidden states [N, d] -> logits of every code of every level [N, levels, codebook]: the cosine between
        the level's head and the code's embedding, over the temperature."""
        heads = hidden[:, None, :] + F.silu(
            torch.einsum("nd,lde->nle", hidden, self.head_weight) + self.head_bias
        )
        table = self.code_emb.weight[1:].view(self.levels, self.codebook, -1)
        logits = torch.einsum("nld,lkd->nlk", F.normalize(heads, dim=-1), F.normalize(table, dim=-1))
        return logits / self.cfg.temperature

    # --- training ------------------------------------------------------------------------------------------------

    def training_batches(self, split: Split, rng: np.random.Generator, batch_size: int) -> Iterator:
        """Each training sequence's newest max_len + 1 items, [B, max_len + 1] (left-padded); every position
        predicts the item after it."""
        train = split.train
        window = np.minimum(train.lengths(), self.cfg.max_len + 1)
        rows = np.flatnonzero(window >= 2)
        for part in length_bucketed_batches(window[rows], batch_size, rng):
            yield (torch.from_numpy(pad_left(train.offsets, train.items, rows[part], self.cfg.max_len + 1)),)

    def code_logits(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """For `code_cross_entropy`: per level the code logits [levels, N, codebook] of the N real positions of a
        training batch, and their targets' codes [N, levels]."""
        items = batch[0].to(self.item_tokens.device)
        inputs, targets = items[:, :-1], items[:, 1:]
        real = inputs > 0
        logits = self.code_logits_of(self.encode(inputs)[real])
        return logits.transpose(0, 1), self.item_codes()[targets[real]]

    # --- scoring and decoding ------------------------------------------------------------------------------------

    def query_log_probs(self, batch: HistoryBatch) -> torch.Tensor:
        """[B, levels, codebook] code log-probabilities of the item after each history."""
        return torch.log_softmax(self.code_logits_of(self.encode(batch.items)[:, -1]), -1)

    def item_scores(self, logp: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Sum of the codes' log-probabilities: logp [B, levels, codebook], items [B, M] or [M] -> [B, M]."""
        # Level l's code c sits at l * codebook + c of the flat row (padding reads code 0 of level 0: masked later).
        tokens = (self.item_tokens[items] - 1).clamp(min=0)
        flat = logp.reshape(len(logp), -1)
        if items.dim() == 1:
            return sum(flat[:, tokens[:, level]] for level in range(self.levels))
        return flat.gather(1, tokens.reshape(len(flat), -1)).view(*items.shape, self.levels).sum(-1)

    @torch.no_grad()
    def score(self, batch: HistoryBatch) -> torch.Tensor:
        """[B, n_items + 1] log p(item | history) of every item from its codes; column 0 is -inf."""
        logp = self.query_log_probs(batch)
        scores = self.item_scores(logp, torch.arange(self.n_items + 1, device=logp.device))
        scores[:, 0] = float("-inf")
        return scores

    def log_likelihood(self, batch: HistoryBatch, items: torch.Tensor) -> torch.Tensor:
        """log p(item | history) [B, n] for `items` [B, n] (ids 1..n_items): the sum over levels of the item's
        code log-probability. Differentiable. Raises DataError for an id outside the catalogue."""
        # Checked on the host only: on an accelerator the check would wait for the device at every step.
        if items.device.type == "cpu" and items.numel() and (items.min() < 1 or items.max() > self.n_items):
            raise DataError(f"log_likelihood: item ids must be in 1..{self.n_items}")
        return self.item_scores(self.query_log_probs(batch), items)

    @torch.no_grad()
    def recommend(self, batch: HistoryBatch, k: int, exclude: torch.Tensor | None = None):
        if self.cfg.decoding == "exact":
            top = torch.topk(candidate_scores(self, batch, exclude), min(k, self.n_items), dim=1)
            return top.indices, top.values
        return self.graph_decode(self.query_log_probs(batch), min(k, self.n_items), exclude)

    def graph(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(neighbours [n_items + 1, edges]: each item's most similar items, row 0 unused; start items [beams])."""
        if self._graph is None:
            table = F.normalize(self.code_emb.weight[1:].detach().float(), dim=-1)
            table = table.view(self.levels, self.codebook, -1)
            sims = torch.bmm(table, table.transpose(1, 2))  # [levels, codebook, codebook] code cosines
            codes = self.item_codes()[1:]
            n, edges = self.n_items, min(self.cfg.graph_edges, self.n_items)
            neighbours = torch.zeros(n + 1, edges, dtype=torch.long, device=codes.device)
            for start in range(0, n, 1024):  # [chunk, n] similarities at a time
                chunk = codes[start : start + 1024]
                sim = sum(sims[lv][chunk[:, lv]][:, codes[:, lv]] for lv in range(self.levels))
                neighbours[1 + start : 1 + start + len(chunk)] = sim.topk(edges, dim=1).indices + 1
            gen = torch.Generator().manual_seed(self.cfg.tokenizer.seed)
            beams = min(self.cfg.graph_beams, n)
            start_items = (torch.randperm(n, generator=gen)[:beams] + 1).to(codes.device)
            self._graph = (neighbours, start_items)
        return self._graph

    def graph_decode(self, logp: torch.Tensor, k: int, exclude: torch.Tensor | None):
        """Top-k ids and scores [B, k] by graph propagation (see the module docstring); slots no visited allowed
        item can fill hold id 0 and score -inf."""
        neighbours, start = self.graph()
        b, neg_inf = len(logp), float("-inf")
        beam = start.expand(b, -1)
        seen_ids, seen_scores = [beam], [self.item_scores(logp, beam)]
        width = max(self.cfg.graph_beams, k)
        for _ in range(self.cfg.graph_steps):
            cand = _distinct(neighbours[beam].reshape(b, -1))
            scores = self.item_scores(logp, cand).masked_fill(cand == 0, neg_inf)
            top = torch.topk(scores, min(width, cand.shape[1]), dim=1)
            beam = cand.gather(1, top.indices)
            seen_ids.append(cand)
            seen_scores.append(scores)
        ids = torch.cat(seen_ids, 1)
        order = ids.argsort(1)  # repeats of an item across steps: keep one
        ids = _distinct(ids.gather(1, order))
        scores = torch.cat(seen_scores, 1).gather(1, order).masked_fill(ids == 0, neg_inf)
        if exclude is not None and exclude.shape[1]:
            banned = exclude.to(ids.device).sort(1).values  # binary search: no [B, M, E] comparison
            at = torch.searchsorted(banned, ids).clamp(max=banned.shape[1] - 1)
            scores = scores.masked_fill(banned.gather(1, at) == ids, neg_inf)
        top = torch.topk(scores, min(k, ids.shape[1]), dim=1)
        found = ids.gather(1, top.indices).masked_fill(torch.isinf(top.values), 0)
        if found.shape[1] < k:  # fewer distinct items visited than asked for
            pad = k - found.shape[1]
            found = F.pad(found, (0, pad))
            return found, F.pad(top.values, (0, pad), value=neg_inf)
        return found, top.values

    def checkpoint_selection(self) -> str:
        how = (
            "every item scored from its codes, exact top-K"
            if self.cfg.decoding == "exact"
            else f"graph-constrained decoding ({self.cfg.graph_beams} beams, {self.cfg.graph_edges} edges, "
            f"{self.cfg.graph_steps} steps)"
        )
        return (
            "weights of the epoch with the best validation score (history-excluded), evaluated once on test; "
            + how
        )


def _distinct(ids: torch.Tensor) -> torch.Tensor:
    """[B, M] item ids -> the same with every repeat within a row (after its first, in sorted order) set to 0."""
    ids, _ = ids.sort(1)
    repeat = torch.zeros_like(ids, dtype=torch.bool)
    repeat[:, 1:] = ids[:, 1:] == ids[:, :-1]
    return ids.masked_fill(repeat, 0)
