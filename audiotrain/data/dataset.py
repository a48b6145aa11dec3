"""AudioDataset: usable items → per-example inputs, from the feature cache or encoded on the fly."""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Mapping, Sequence

import torch
from torch.utils.data import Dataset

from audiotrain.data.audio_io import AudioSpec, StreamSpec, load_audio
from audiotrain.data.cache import DamagedEntry, FeatureCache
from audiotrain.data.given import as_tensors, given_features
from audiotrain.data.prepare import Item
from audiotrain.data.streams import as_streams, primary
from audiotrain.plugins.base import Plugin
from audiotrain.encoders.base import FrozenEncoder


class AudioDataset(Dataset):
    """``__getitem__`` gives cached features (``{"features": {...}}``) or a raw example to encode.

    Raw examples carry every present stream decoded to its role's spec (``streams: {role: {"audio": (C, N)
    float tensor, "audio_length": int}}``) plus the plugin's prepared text fields; the training module gives
    each encoder its own stream (``streams.encoder_input``), as the cache build does, so cache on/off feed
    identical features. An encoder of an absent optional stream has no features in either path.
    """

    def __init__(self, items: Sequence[Item], plugin: Plugin, spec: AudioSpec | Mapping[str, StreamSpec],
                 encoders: Sequence[FrozenEncoder], cache: FeatureCache | None):
        self.items = list(items)
        self.plugin = plugin
        self.streams = as_streams(spec)
        self.spec = self.streams[primary(self.streams)]  # the primary stream's spec
        self.encoders = list(encoders)
        self.cache = cache
        self._lru: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()
        self._by_group: dict[str, list[int]] | None = None

    #: cached features kept in memory per process (and per loader worker), LRU: at most this many examples and
    #: this many bytes (codes and text states are small; a voice prompt's stacked hidden states are not)
    memory_items: int = 512
    memory_bytes: int = 1 << 30

    def _cached(self, item: Item) -> dict[str, torch.Tensor]:
        lru = self._lru
        if item.fingerprint in lru:
            lru.move_to_end(item.fingerprint)
            return lru[item.fingerprint]
        feats: dict[str, torch.Tensor] = {}
        for t in self.encoders:
            if t.name in item.entries:
                try:
                    feats.update(self.cache.load(t.name, t.cache_key(), item.entries[t.name]))
                except DamagedEntry as exc:  # damaged since preparation: never trusted, computed again
                    feats.update(self._recompute(item, t, str(exc)))
        lru[item.fingerprint] = feats
        self._lru_bytes = getattr(self, "_lru_bytes", 0) + _nbytes(feats)
        while len(lru) > 1 and (len(lru) > self.memory_items or self._lru_bytes > self.memory_bytes):
            _, dropped = lru.popitem(last=False)
            self._lru_bytes -= _nbytes(dropped)
        return feats

    def _recompute(self, item: Item, encoder: FrozenEncoder, why: str) -> dict[str, torch.Tensor]:
        """One encoder's features of ``item`` encoded again from its audio/text and written back to the cache."""
        import sys

        from audiotrain.data.streams import encoder_input

        print(f"audiotrain: the feature-cache entry {why}; re-computing it.", file=sys.stderr)
        given = given_features(item.row)
        if encoder.name in given:  # the dataset holds these outputs: written back as they are
            out = as_tensors(given[encoder.name])
            self.cache.save(encoder.name, encoder.cache_key(), item.entries[encoder.name], out)
            return out
        index = self.items.index(item)
        example = self.plugin.prepare_example(item.row, None)
        example["streams"] = {role: self.stream_audio(index, role) for role in item.durations}
        with torch.no_grad():
            out = encoder.encode(encoder_input(example, encoder.stream))
        self.cache.save(encoder.name, encoder.cache_key(), item.entries[encoder.name], out)
        return dict(out)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def durations(self) -> list[float]:
        return [it.duration for it in self.items]

    @property
    def groups(self) -> list[str]:
        """Each item's group (the plugin's ``group_field``, e.g. a speaker); all "" when the plugin has none."""
        name = getattr(self.plugin, "group_field", None)
        return [str(it.row.get(name, "")) if name else "" for it in self.items]

    def same_group(self, index: int) -> list[int]:
        """Indices of the other usable items of ``index``'s group (with a distinct fingerprint)."""
        if self._by_group is None:
            self._group_of = self.groups
            self._by_group = {}
            for i, g in enumerate(self._group_of):
                self._by_group.setdefault(g, []).append(i)
        me = self.items[index]
        return [j for j in self._by_group[self._group_of[index]] if self.items[j].fingerprint != me.fingerprint]

    def features_of(self, index: int) -> dict:
        """One item's features, from the cache or as a raw example to encode (same as ``__getitem__``)."""
        return self[index]

    def stream_audio(self, index: int, role: str) -> dict[str, Any] | None:
        """One stream of an item decoded to its spec (``{"audio": (C, N) tensor, "audio_length": int}``), or
        None when the item has no such stream."""
        path = self.items[index].stream_path(role)
        if path is None:
            return None
        audio, length = load_audio(path, self.streams[role])
        return {"audio": torch.from_numpy(audio), "audio_length": length}

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.items[index]
        if self.cache is not None:
            return {"key": item.row["key"], "index": index, "features": self._cached(item)}
        example = self.plugin.prepare_example(item.row, None)
        example["streams"] = {role: self.stream_audio(index, role) for role in item.durations}
        if given_features(item.row):
            example["given"] = given_features(item.row)
        return {"key": item.row["key"], "index": index, "raw": example}


def _nbytes(feats: Mapping[str, Any]) -> int:
    """Bytes held by one example's features (tensors, and lists of per-clip dicts of tensors)."""
    total = 0
    for v in feats.values():
        if isinstance(v, torch.Tensor):
            total += v.numel() * v.element_size()
        elif isinstance(v, Mapping):
            total += _nbytes(v)
        elif isinstance(v, (list, tuple)):
            total += sum(_nbytes(x) if isinstance(x, Mapping) else 0 for x in v)
    return total


def collate_passthrough(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep the list; the training module encodes (if raw) and calls the plugin's collate."""
    return batch
