"""A SAID-style text-to-ID projector: item text vectors mapped into a trained ID model's item-embedding space, so
that an item the ID model never trained on (a cold item) gets a usable ID vector from its text.

SAID (Hu et al. 2024, "Enhancing Sequential Recommendation via LLM-based Semantic Embedding Learning", WWW '24
Companion, https://doi.org/10.1145/3589335.3648307) learns item embeddings from text with an LLM so that they line
up with what a sequential recommender needs. We keep the idea at its smallest: the ID model is trained as usual,
then a two-layer MLP is fitted on the warm items (those that occurred in training) to regress their learned ID
vectors from their frozen text vectors (MiniLM by default), with MSE plus a cosine term; cold items' rows are
replaced by the projection. Warm rows are left as they are, so warm recommendations change only where a cold
item now outranks a warm one. Deviation from SAID: no LLM fine-tuning, no token-level alignment; the projector is
fitted after the ID model, not jointly.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class TextToIDProjector(nn.Module):
    """[N, text_dim] text vectors -> [N, dim] vectors in the ID model's item space."""

    def __init__(self, text_dim: int, dim: int, hidden: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(text_dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        return self.net(text)


def fit_projector(
    text: torch.Tensor,
    target: torch.Tensor,
    epochs: int = 200,
    lr: float = 3e-3,
    cosine_weight: float = 1.0,
    weight_decay: float = 1e-4,
    valid_share: float = 0.1,
    seed: int = 0,
) -> tuple[TextToIDProjector, dict]:
    """Fit the projector on warm items: `text` [N, text_dim], `target` [N, dim] their ID vectors. Full-batch
    AdamW on MSE + `cosine_weight` * (1 - cos); a `valid_share` of the items is held out and the epoch with the
    lowest held-out loss is kept. Returns (projector, report with the held-out cosine and MSE)."""
    if text.shape[0] != target.shape[0] or text.shape[0] < 10:
        raise ValueError(
            f"need >= 10 paired rows, got text {tuple(text.shape)} and target {tuple(target.shape)}"
        )
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    order = torch.randperm(text.shape[0], generator=gen)
    n_valid = max(1, int(valid_share * len(order)))
    valid, train = order[:n_valid], order[n_valid:]
    proj = TextToIDProjector(text.shape[1], target.shape[1])
    opt = torch.optim.AdamW(proj.parameters(), lr=lr, weight_decay=weight_decay)

    def loss_of(rows):
        pred = proj(text[rows])
        mse = F.mse_loss(pred, target[rows])
        cos = F.cosine_similarity(pred, target[rows], dim=1).mean()
        return mse + cosine_weight * (1 - cos), mse, cos

    best, best_state, best_epoch = float("inf"), None, 0
    for epoch in range(epochs):
        proj.train()
        opt.zero_grad()
        loss_of(train)[0].backward()
        opt.step()
        proj.eval()
        with torch.no_grad():
            v = loss_of(valid)[0].item()
        if v < best:
            best, best_epoch = v, epoch + 1
            best_state = {k: t.clone() for k, t in proj.state_dict().items()}
    proj.load_state_dict(best_state)
    with torch.no_grad():
        _, mse, cos = loss_of(valid)
    report = {
        "held_out_mse": round(mse.item(), 5),
        "held_out_cosine": round(cos.item(), 4),
        "best_epoch": best_epoch,
        "warm_items": int(text.shape[0]),
        "held_out_items": int(n_valid),
    }
    return proj, report


@torch.no_grad()
def project_cold_rows(
    table: torch.Tensor, text: torch.Tensor, is_cold: np.ndarray, match_norm: bool = False, **fit_options
) -> tuple[torch.Tensor, dict]:
    """A copy of the item table `table` [n_items + 1, d] (row 0 padding) whose cold rows (`is_cold` [n_items + 1]
    bool) are the projections of their text vectors `text` [n_items + 1, text_dim]; the projector is fitted on
    the warm rows with text. `match_norm` rescales each projected row to the warm rows' mean norm (a regression
    shrinks towards the mean, which ranks cold items low). Returns (new table, report)."""
    is_cold = torch.as_tensor(is_cold, dtype=torch.bool)
    has_text = text.abs().sum(1) > 0
    warm = ~is_cold & has_text
    warm[0] = False
    with torch.enable_grad():
        proj, report = fit_projector(text[warm], table[warm].float(), **fit_options)
    out = table.clone()
    cold = is_cold & has_text
    rows = proj(text[cold])
    if match_norm:
        mean_norm = table[warm].norm(dim=1).mean()
        rows = F.normalize(rows, dim=1) * mean_norm
    out[cold] = rows.to(out.dtype)
    report.update(
        {
            "cold_rows_replaced": int(cold.sum()),
            "match_norm": match_norm,
            "projected_norm": round(rows.norm(dim=1).mean().item(), 4),
            "warm_norm": round(table[warm].norm(dim=1).mean().item(), 4),
        }
    )
    return out, report
