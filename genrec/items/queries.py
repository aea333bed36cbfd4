"""Search queries for items, for training and evaluating search beside recommendation.

A real search log is not part of the public recommendation datasets, so queries are made from item text with a
fixed template (`template_query`) that reads like what a shopper types, not like the item's title:

    query = the item's most specific category + its parent category + two descriptive words of its title

lower-cased, with '&' and punctuation dropped. The two title words are drawn, by a hash of the item id (so the
same item always gets the same query), from the title's words of 3+ letters that are not the title's first word
(usually the brand), not a stop word, not a number, not already in the query's category words, and common
across the catalogue: found in at least `min_title_share` (0.4%) of all titles, so they describe (colour,
finish, form: "black", "matte", "gel", "long") rather than name a product ("shatter", "crackle") or a brand. An
item whose title has fewer than two such words keeps what it has. Example: "OPI Red Shatter Crackle Nail Polish
E55 New" in Beauty > Makeup > Nails > Nail Polish -> "nail polish nails red".

Many items share a category and such words, so the query narrows the catalogue without naming one item: the
held-out item's query is not its title, query-only retrieval (BM25, MiniLM) is ambiguous among items of the same
kind, and the user's history is what can tell them apart. With any title word allowed (the rare ones included),
BM25 alone found the item at N@10 0.81 on Beauty: search was a lookup of product names.

`query_prompt` is the prompt of the second variant, where a language model writes the query from the same title
and categories (see `genrec.experiments.search`).
"""

from __future__ import annotations

import hashlib
import html
import math
import re
from collections import Counter

_WORD = re.compile(r"[a-z]+")
STOP_WORDS = frozenset(
    "and the for with from new pack set of in on by to oz fl ml count size inch inches pcs piece pieces "
    "ounce ounces gram grams each per one two free".split()
)


def words(text: str) -> list[str]:
    return _WORD.findall(html.unescape(text).lower())


def category_path(categories) -> list[str]:
    """The first (most specific) category path of an item: a list of names, root first. Accepts a list of paths
    (Amazon's [[...], ...]), one path, or a '|'-separated string."""
    if not categories:
        return []
    if isinstance(categories, str):
        return [c.strip() for c in categories.split("|") if c.strip()]
    first = categories[0]
    if isinstance(first, (list, tuple)):
        return [c for c in first if c]
    return [c for c in categories if c]


def template_query(
    item_id, title: str | None, categories, n_title_words: int = 2, allowed: set[str] | None = None
) -> str:
    """The search query of one item (template in the module docstring); '' for an item with no text.
    `allowed`: the title words that may be used (None = any)."""
    path = category_path(categories)
    cat_words = [w for name in reversed(path[-2:]) for w in words(name)] if path else []
    title_words = words(title or "")[1:]
    seen = set(cat_words)
    pool = [
        w
        for w in dict.fromkeys(title_words)
        if len(w) >= 3 and w not in STOP_WORDS and w not in seen and (allowed is None or w in allowed)
    ]
    digest = hashlib.sha256(str(item_id).encode()).digest()
    chosen = []
    for i in range(min(n_title_words, len(pool))):
        chosen.append(pool.pop(digest[i] % len(pool)))
    return " ".join(dict.fromkeys(cat_words + chosen))


def common_title_words(titles: list[str | None], min_share: float = 0.004) -> set[str]:
    """Words found in at least `min_share` of the titles (and in at least 2)."""
    counts = Counter(w for t in titles for w in set(words(t or "")))
    least = max(2, math.ceil(min_share * len(titles)))
    return {w for w, c in counts.items() if c >= least}


def template_queries(items, min_title_share: float = 0.004) -> list[str]:
    """One query per row of a run's item table (polars DataFrame with item_id, title, categories)."""
    allowed = common_title_words(items["title"].to_list(), min_title_share)
    return [
        template_query(r["item_id"], r.get("title"), r.get("categories"), allowed=allowed)
        for r in items.iter_rows(named=True)
    ]


def query_prompt(title: str, categories) -> str:
    """The instruction that asks a language model for a short shopper's query for one item."""
    path = " > ".join(category_path(categories)) or "unknown"
    return (
        "Write a short search query (3 to 6 words) that a shopper might type to find this product. "
        "Do not copy the product name; describe what it is.\n"
        f"Product: {title}\nCategory: {path}\nQuery:"
    )


def clean_generated_query(text: str) -> str:
    """The first line of a generated query, lower-cased words only (quotes, numbering and punctuation dropped)."""
    line = next((ln for ln in text.strip().splitlines() if ln.strip()), "")
    return " ".join(words(line))[:200]
