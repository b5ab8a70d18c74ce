"""Frozen text encoders give the same features for the same instruction: compute them once.

Training sees a few thousand distinct instructions thousands of times each; caching the frozen
encoder's token states turns the language tower into a table look-up. Only valid while the
text encoder is frozen (the trainer bypasses the cache otherwise).
"""
from __future__ import annotations

import torch

from ..model.encoders import TextFeatures


class TextFeatureCache:
    def __init__(self, encode_text, max_entries: int = 200_000):
        self._encode_text = encode_text
        self._entries: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    @torch.no_grad()
    def __call__(self, instructions: list[str]) -> TextFeatures:
        missing = list(dict.fromkeys(t for t in instructions if t not in self._entries))
        self.misses += len(missing)
        self.hits += len(instructions) - len(missing)
        if missing:
            self._store(missing, self._encode_text(missing))
        return self._collate(instructions)

    def _store(self, texts: list[str], features: TextFeatures) -> None:
        if len(self._entries) + len(texts) > self.max_entries:
            self._entries.clear()  # a blunt bound; the training set rarely reaches it
        lengths = features.mask.sum(dim=1).tolist()
        for i, text in enumerate(texts):
            n = int(lengths[i])
            self._entries[text] = (features.tokens[i, :n].clone(), features.pooled[i].clone())

    def _collate(self, instructions: list[str]) -> TextFeatures:
        rows = [self._entries[t] for t in instructions]
        length = max(tokens.shape[0] for tokens, _ in rows)
        first = rows[0][0]
        tokens = first.new_zeros((len(rows), length, first.shape[-1]))
        mask = torch.zeros((len(rows), length), dtype=torch.bool, device=first.device)
        for i, (row_tokens, _) in enumerate(rows):
            tokens[i, :row_tokens.shape[0]] = row_tokens
            mask[i, :row_tokens.shape[0]] = True
        pooled = torch.stack([pooled for _, pooled in rows])
        return TextFeatures(tokens=tokens, mask=mask, pooled=pooled)
