"""AudioDataset: usable items → per-example inputs, from the feature cache or encoded on the fly."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch.utils.data import Dataset

from audiotrain.data.audio_io import AudioSpec, load_audio
from audiotrain.data.cache import FeatureCache
from audiotrain.data.prepare import Item
from audiotrain.plugins.base import Plugin
from audiotrain.tokenizers.base import Tokenizer


class AudioDataset(Dataset):
    """``__getitem__`` gives cached features (``{"features": {...}}``) or a raw example to encode.

    Raw examples carry the decoded audio (``audio`` (C, N) float tensor, ``audio_length``) plus the
    plugin's prepared text fields; the training module encodes them with the same tokenizers the
    cache uses, so cache on/off feed identical features.
    """

    def __init__(self, items: Sequence[Item], plugin: Plugin, spec: AudioSpec,
                 tokenizers: Sequence[Tokenizer], cache: FeatureCache | None):
        self.items = list(items)
        self.plugin = plugin
        self.spec = spec
        self.tokenizers = list(tokenizers)
        self.cache = cache

    #: cached features kept in memory per process (small: codes, latents, text states), LRU
    memory_items: int = 512

    def _cached(self, fingerprint: str) -> dict[str, torch.Tensor]:
        from collections import OrderedDict

        lru = self.__dict__.setdefault("_lru", OrderedDict())
        if fingerprint in lru:
            lru.move_to_end(fingerprint)
            return lru[fingerprint]
        feats: dict[str, torch.Tensor] = {}
        for t in self.tokenizers:
            feats.update(self.cache.load(t.name, t.cache_key(), fingerprint))
        lru[fingerprint] = feats
        if len(lru) > self.memory_items:
            lru.popitem(last=False)
        return feats

    def __len__(self) -> int:
        return len(self.items)

    @property
    def durations(self) -> list[float]:
        return [it.duration for it in self.items]

    @property
    def speakers(self) -> list[str]:
        return [str(it.row.get("speaker", "")) for it in self.items]

    def same_speaker(self, index: int) -> list[int]:
        """Indices of the other usable utterances of ``index``'s speaker (with a distinct fingerprint)."""
        if not hasattr(self, "_by_speaker"):
            groups: dict[str, list[int]] = {}
            for i, s in enumerate(self.speakers):
                groups.setdefault(s, []).append(i)
            self._by_speaker = groups
        me = self.items[index]
        return [j for j in self._by_speaker[self.speakers[index]] if self.items[j].fingerprint != me.fingerprint]

    def features_of(self, index: int) -> dict:
        """One item's features, from the cache or as a raw example to encode (same as ``__getitem__``)."""
        return self[index]

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.items[index]
        if self.cache is not None:
            return {"key": item.row["key"], "index": index, "features": self._cached(item.fingerprint)}
        example = self.plugin.prepare_example(item.row, None)
        audio, length = load_audio(item.row["audio_path"], self.spec)
        example["audio"] = torch.from_numpy(audio)
        example["audio_length"] = length
        return {"key": item.row["key"], "index": index, "raw": example}


def collate_passthrough(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep the list; the training module encodes (if raw) and calls the plugin's collate."""
    return batch
