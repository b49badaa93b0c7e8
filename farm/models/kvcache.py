"""Key/value caches across transformers versions (4.45 … 5.x): the forward's keyword (`past_key_values`, renamed
`cache` in 5.x), a cache's per-layer tensors, and a cache built from tensors (a shared prefix expanded to a batch).
"""

from __future__ import annotations

import inspect


def forward_cache_kwarg(module) -> str:
    """The name under which `module.forward` takes a cache: "cache" (transformers ≥ 5.x) or "past_key_values"."""
    params = inspect.signature(type(module).forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def cache_layers(output) -> list[tuple]:
    """[(keys, values)] per layer, each (B, kv_heads, T, head_dim), of the cache a forward returned."""
    cache = getattr(output, "cache", None)
    if cache is None:
        cache = output.past_key_values
    return [(kv[0], kv[1]) for kv in cache]


def expanded_cache(layers: list[tuple], length: int, rows: int):
    """A DynamicCache holding the first `length` positions of a batch-1 cache, viewed (not copied) as `rows` rows.
    The forward appends to it by concatenation, so the shared tensors are never written."""
    from transformers import DynamicCache

    data = tuple((k[:, :, :length].expand(rows, -1, -1, -1), v[:, :, :length].expand(rows, -1, -1, -1))
                 for k, v in layers)
    if hasattr(DynamicCache, "from_legacy_cache"):
        return DynamicCache.from_legacy_cache(data)
    return DynamicCache(data)


def expanded_rows_cache(layers: list[tuple], repeats: int):
    """A DynamicCache of a batch-B cache repeated `repeats` times along the batch (rows j·B + i = row i), a copy
    that keeps the autograd graph (a prefix shared by several continuations in training)."""
    from transformers import DynamicCache

    data = tuple((k.repeat(repeats, 1, 1, 1), v.repeat(repeats, 1, 1, 1)) for k, v in layers)
    if hasattr(DynamicCache, "from_legacy_cache"):
        return DynamicCache.from_legacy_cache(data)
    return DynamicCache(data)
