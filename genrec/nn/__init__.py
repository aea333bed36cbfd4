"""Building blocks shared by every model: item embeddings, causal attention, the HSTU block, losses' helpers."""
