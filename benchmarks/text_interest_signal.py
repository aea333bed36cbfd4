"""How much each text-interest feature alone separates likes, before any training: AUC / GAUC on validation.

    python -m benchmarks text_interest_signal [--dataset ml-1m] [--max-len 100] [--threads 2]

Each feature of `TextInterest` (genrec/models/ranking/base.py) is used as the score of every validation
impression (history = the last `max-len` events before the validation cut-off, as the rankers read it), with
three item tables: the recipe's all-MiniLM-L6-v2 embeddings of "title | genres", embeddings of the title alone,
and genre multi-hot vectors (the cosine of two genre sets). If the title-only features were no better than
chance, or the text features just restated genre overlap, text-space relevance would add nothing DIN's genre
embeddings do not have. Prints one Markdown table, then the correlation of the title-only and genre features
with the "title | genres" ones. Validation only: nothing here reads the test split.
"""

from __future__ import annotations

import numpy as np
import torch

from benchmarks._common import Report, parser
from genrec.config import RankDataConfig
from genrec.eval.ranking import auc, gauc
from genrec.items.text import encode_texts
from genrec.models.ranking.base import TEXT_INTEREST, TextInterest
from genrec.registry import get as model_class
from genrec.runs.ranking import prepare_feedback, text_embeddings


def features(model, data, table: np.ndarray) -> np.ndarray:
    model.text_interest = TextInterest(table)
    out = np.zeros((len(data.valid), len(TEXT_INTEREST)), dtype=np.float32)
    with torch.no_grad():
        for index, batch in model.eval_batches(data, data.valid, 64):
            have = index >= 0
            out[index[have]] = model.interest(batch, model.visible(batch)).numpy()[have]
    return out


def main(argv: list[str] | None = None) -> None:
    ap = parser(__name__, __doc__)
    ap.add_argument("--dataset", default="ml-1m")
    ap.add_argument("--max-len", type=int, default=100)
    args = ap.parse_args(argv)
    report = Report(__name__, args)
    torch.set_num_threads(args.threads)
    data = prepare_feedback(RankDataConfig(dataset=args.dataset))[0]
    full = text_embeddings(data)
    cfg = model_class("din").config_class(name="din", max_len=args.max_len, text_interest=True)
    model = model_class("din")(cfg, data, full).eval()
    titles = encode_texts([t.split(" | ")[0] for t in data.features.item_text])
    genres = np.zeros((data.n_items, data.features.n_genres + 1), dtype=np.float32)
    for i, row in enumerate(data.features.item_genres[1:]):
        genres[i, row[row > 0]] = 1.0
    tables = {"title + genres": full, "title only": titles, "genres multi-hot": genres[:, 1:]}
    feats = {name: features(model, data, table) for name, table in tables.items()}
    y, users = data.valid.labels, data.valid.users
    report.line(
        f"{args.dataset} validation, {len(y)} impressions, last {args.max_len} events; AUC / GAUC per feature\n"
    )
    rows = []
    for j, name in enumerate(TEXT_INTEREST):
        scores = {table: (auc(y, f[:, j]), gauc(users, y, f[:, j])[0]) for table, f in feats.items()}
        report.results[name] = scores
        rows.append([name, *(f"{a:.4f} / {g:.4f}" for a, g in scores.values())])
    report.table(["feature", *tables], rows)
    ref = feats["title + genres"]
    for name in ("title only", "genres multi-hot"):
        corr = [np.corrcoef(ref[:, j], feats[name][:, j])[0, 1] for j in range(len(TEXT_INTEREST))]
        report.line(
            f"correlation with title + genres, {name}: median {np.median(corr):.2f} (min {min(corr):.2f})"
        )
    report.save()
