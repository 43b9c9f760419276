"""The live batch: one left-padded KV cache shared by every sequence an engine is generating.

Layout: row ``r`` of every cache tensor ([batch, heads, columns, head_dim]) belongs to sequence
``ids[r]``; ``mask[r, c] == 1`` where column ``c`` holds one of its real tokens. Rows are left-padded
so all of them end at the last column, and position ids come from how many real tokens a row has,
never from column numbers. That is what lets sequences join and leave between steps:

- a new group is prefilled as its own padded batch (rows with equal prompt and adapter, such as one
  request's choices, computed once and copied), then merged by left-padding both caches to a
  common width and stacking rows (a copy, once per prefill);
- released rows are index-selected away, and columns that no remaining row uses are trimmed;
- a decode step over every row appends one column in place (the common case: no copies beyond the
  cache's own append); a step over a subset runs only those rows and gives the others a masked
  (hole) column, so the cache stays rectangular.

Only full-attention ``DynamicLayer`` caches are supported: a sliding window would drop columns per
layer and break the shared column layout.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F
from transformers.cache_utils import DynamicCache, DynamicLayer


class ForwardFn(Protocol):
    """Runs the model one step; returns the last position's logits [rows, vocab]."""

    def __call__(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        cache: DynamicCache,
        adapters: list[str | None],
    ) -> torch.Tensor: ...


class LiveBatch:
    """Rows, cache and masks of the sequences being generated; no sampling, no text."""

    def __init__(self, new_cache: Callable[[], DynamicCache], device: torch.device, pad_id: int = 0) -> None:
        self._new_cache = new_cache
        self._device = device
        self._pad_id = pad_id
        self.ids: list[str] = []
        self._row: dict[str, int] = {}
        self._adapters: list[str | None] = []
        self._cache: DynamicCache | None = None
        self._mask: torch.Tensor | None = None  # [rows, columns] long
        self._lengths: torch.Tensor | None = None  # [rows] real tokens in the cache = next position id
        self._pending: torch.Tensor | None = None  # [rows] last sampled token, not yet in the cache

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, seq_id: str) -> bool:
        return seq_id in self._row

    @property
    def width(self) -> int:
        """Cache columns (the padded length every row shares)."""
        return 0 if self._mask is None else int(self._mask.shape[1])

    # -- joining ------------------------------------------------------------------------------
    def prefill(
        self, ids: list[str], prompts: list[list[int]], adapters: list[str | None], run: ForwardFn
    ) -> torch.Tensor:
        """Prefill a new group as its own padded batch, merge it in; return its logits [n, vocab].

        The live batch is untouched if the forward pass raises.
        """
        # Equal (prompt, adapter) rows, such as a request's n choices, are computed once and copied.
        keys = [(tuple(p), a) for p, a in zip(prompts, adapters)]
        unique = list(dict.fromkeys(keys))
        input_ids, mask = self._left_pad([list(k[0]) for k in unique])
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = self._new_cache()
        logits = run(input_ids, mask, positions, cache, [k[1] for k in unique])
        _check_layers(cache)
        if len(unique) < len(keys):
            where = {k: i for i, k in enumerate(unique)}
            rows = torch.tensor([where[k] for k in keys], device=self._device)
            for layer in cache.layers:
                layer.keys, layer.values = layer.keys[rows], layer.values[rows]
            mask, logits = mask[rows], logits[rows]
        lengths = mask.sum(-1)
        self._merge(cache, mask, lengths)
        self.ids.extend(ids)
        self._adapters.extend(adapters)
        self._row = {seq_id: r for r, seq_id in enumerate(self.ids)}
        self._pending = _cat_rows(self._pending, torch.full_like(lengths, self._pad_id))
        return logits

    def _left_pad(self, prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            input_ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            mask[row, width - len(prompt) :] = 1
        return input_ids.to(self._device), mask.to(self._device)

    def _merge(self, cache: DynamicCache, mask: torch.Tensor, lengths: torch.Tensor) -> None:
        if self._cache is None:
            self._cache, self._mask, self._lengths = cache, mask, lengths
            return
        width = max(self.width, int(mask.shape[1]))
        for old, new in zip(self._cache.layers, cache.layers):
            old.keys = torch.cat([_pad_cols(old.keys, width, -2), _pad_cols(new.keys, width, -2)])
            old.values = torch.cat([_pad_cols(old.values, width, -2), _pad_cols(new.values, width, -2)])
        self._mask = torch.cat([_pad_cols(self._mask, width, -1), _pad_cols(mask, width, -1)])
        self._lengths = torch.cat([self._lengths, lengths])

    # -- stepping -----------------------------------------------------------------------------
    def set_next(self, ids: list[str], tokens: list[int]) -> None:
        """Record the tokens just sampled for ``ids``; the next step feeds them to the model."""
        rows = torch.tensor([self._row[i] for i in ids], device=self._device)
        self._pending[rows] = torch.tensor(tokens, dtype=torch.long, device=self._device)

    def step(self, ids: list[str], run: ForwardFn) -> torch.Tensor:
        """Feed each named row its pending token; return logits [len(ids), vocab] in ``ids`` order."""
        rows = [self._row[i] for i in ids]
        if len(rows) == len(self.ids):  # every row, maybe in another order: no cache copies
            logits = self._step_all(run)
            return logits if rows == list(range(len(rows))) else logits[rows]
        return self._step_rows(rows, run)

    def _step_all(self, run: ForwardFn) -> torch.Tensor:
        width = self.width
        mask = F.pad(self._mask, (0, 1), value=1)
        try:
            logits = run(self._pending[:, None], mask, self._lengths[:, None], self._cache, self._adapters)
        except BaseException:
            self._crop(width)  # some layers may already hold the new column
            raise
        self._mask = mask
        self._lengths = self._lengths + 1
        return logits

    def _step_rows(self, rows: list[int], run: ForwardFn) -> torch.Tensor:
        idx = torch.tensor(rows, device=self._device)
        sub = DynamicCache(ddp_cache_data=[(layer.keys[idx], layer.values[idx]) for layer in self._cache.layers])
        mask = F.pad(self._mask[idx], (0, 1), value=1)
        adapters = [self._adapters[r] for r in rows]
        logits = run(self._pending[idx][:, None], mask, self._lengths[idx][:, None], sub, adapters)
        for layer, part in zip(self._cache.layers, sub.layers):
            layer.keys = _append_hole_column(layer.keys, idx, part.keys)
            layer.values = _append_hole_column(layer.values, idx, part.values)
        column = torch.zeros((len(self.ids), 1), dtype=torch.long, device=self._device)
        column[idx] = 1
        self._mask = torch.cat([self._mask, column], dim=1)
        self._lengths = self._lengths.index_add(0, idx, torch.ones_like(idx))
        return logits

    def _crop(self, width: int) -> None:
        for layer in self._cache.layers:
            if layer.keys.shape[-2] > width:
                layer.keys = layer.keys[..., :width, :]
                layer.values = layer.values[..., :width, :]

    # -- leaving ------------------------------------------------------------------------------
    def remove(self, ids: list[str]) -> None:
        """Drop rows (unknown ids are ignored) and trim columns no remaining row uses."""
        gone = {i for i in ids if i in self._row}
        if not gone:
            return
        keep = [r for r, seq_id in enumerate(self.ids) if seq_id not in gone]
        if not keep:
            self.clear()
            return
        rows = torch.tensor(keep, device=self._device)
        mask = self._mask[rows]
        cols = mask.any(dim=0).nonzero().squeeze(1)
        for layer in self._cache.layers:
            layer.keys = layer.keys[rows][:, :, cols]
            layer.values = layer.values[rows][:, :, cols]
        self._mask = mask[:, cols]
        self._lengths, self._pending = self._lengths[rows], self._pending[rows]
        self.ids = [self.ids[r] for r in keep]
        self._adapters = [self._adapters[r] for r in keep]
        self._row = {seq_id: r for r, seq_id in enumerate(self.ids)}

    def clear(self) -> None:
        self.ids, self._row, self._adapters = [], {}, []
        self._cache = self._mask = self._lengths = self._pending = None

    def adapters_of(self, ids: list[str]) -> set[str]:
        return {a for i in ids if (a := self._adapters[self._row[i]]) is not None}

    def nbytes(self) -> int:
        """Bytes held by the cache and its bookkeeping tensors."""
        if self._cache is None:
            return 0
        tensors = [self._mask, self._lengths, self._pending]
        for layer in self._cache.layers:
            tensors += [layer.keys, layer.values]
        return sum(t.numel() * t.element_size() for t in tensors)


def _check_layers(cache: DynamicCache) -> None:
    odd = {type(layer).__name__ for layer in cache.layers if type(layer) is not DynamicLayer}
    if odd:
        raise NotImplementedError(f"the live batch needs full-attention cache layers, got {sorted(odd)}")


def _pad_cols(t: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    """Left-pad dimension ``dim`` (-1 or -2) of ``t`` with zeros up to ``width``."""
    missing = width - t.shape[dim]
    if missing == 0:
        return t
    pad = (missing, 0) if dim == -1 else (0, 0, missing, 0)
    return F.pad(t, pad)


def _cat_rows(a: torch.Tensor | None, b: torch.Tensor) -> torch.Tensor:
    return b if a is None else torch.cat([a, b])


def _append_hole_column(full: torch.Tensor, rows: torch.Tensor, part: torch.Tensor) -> torch.Tensor:
    """Add one column to ``full``: the subset's new entries at ``rows``, zeros (masked) elsewhere."""
    column = full.new_zeros((*full.shape[:2], 1, full.shape[3]))
    column[rows] = part[:, :, -1:]
    return torch.cat([full, column], dim=2)
