"""Conditioning clips: N clips per example of a plugin-set length, from the same file or the same group, cut
reproducibly per step and across a resume, on cached features and on raw audio."""
from __future__ import annotations

import pytest
import torch

from audiotrain.data.cache import FeatureCache
from audiotrain.data.clips import ClipSpec, choose_sources, clip_seed, cut
from audiotrain.data.dataset import AudioDataset
from audiotrain.data.manifest import Manifest
from audiotrain.data.prepare import prepare_items
from audiotrain.data.report import BadInputReport
from audiotrain.train.module import TrainModule

from tests.core.tiny_streams import HOP, STREAMS, TinyStreams, module_cfg, write_tone

RATE = STREAMS["mix"].sample_rate / HOP  # 40 RMS frames a second
STREAMS2 = {"mix": STREAMS["mix"], "vocal": STREAMS["vocal"]}


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    """Singer A: a 1.5 s and a 0.25 s song; singer B: one 1.0 s song. Each file has its own pitch and level."""
    d = tmp_path_factory.mktemp("clips")
    out = []
    for key, singer, seconds, gain in (("a1", "A", 1.5, 1.0), ("a2", "A", 0.25, 0.6), ("b1", "B", 1.0, 0.3)):
        files = {"mix": write_tone(d / f"{key}_mix.wav", 16000, seconds, [gain, gain / 2], freq=200 + 100 * gain),
                 "vocal": write_tone(d / f"{key}_vocal.wav", 8000, seconds, [gain])}
        out.append({"key": key, "singer": singer, "text": key, "audio": {r: str(p) for r, p in files.items()}})
    return out


def build(rows, clips, cache_dir=None, seed=7):
    plugin = TinyStreams(STREAMS2, clips)
    toks = plugin.build_encoders(None)
    cache = FeatureCache(cache_dir, "tiny") if cache_dir else None
    items = prepare_items(Manifest(rows), plugin, plugin.audio_streams(None), toks, cache, BadInputReport())
    ds = AudioDataset(items, plugin, plugin.audio_streams(None), toks, cache)
    module = TrainModule(plugin.build_backbone(None), plugin, module_cfg(seed), toks, None, adapter_only=False)
    module.dataset = ds
    return ds, module


def clips_of(ds, module, salt):
    items = [module._item_features(ds[i]) for i in range(len(ds))]
    from audiotrain.data.clips import attach

    attach(module._clip_specs, items, list(range(len(ds))), module._seed, salt, ds.same_group,
           lambda j: module._item_features(ds[j]), ds.stream_audio, lambda r: ds.streams[r].sample_rate)
    return items


def windows(t: torch.Tensor, frames: int) -> list[torch.Tensor]:
    return [t[s:s + frames] for s in range(t.shape[0] - frames + 1)]


def test_clips_from_the_same_file_have_the_length_the_plugin_sets_and_are_padded_when_short(rows, tmp_path):
    spec = ClipSpec("cond", count=2, seconds=(0.5, 0.5), source="same_file", features={"mix_rms": (RATE, 0)},
                    start="random", pad=True)
    ds, module = build(rows, [spec], tmp_path / "cache")
    items = clips_of(ds, module, salt=3)
    for it in items:
        own = it["mix_rms"]
        assert len(it["cond"]) == 2
        for clip in it["cond"]:
            assert tuple(clip["mix_rms"].shape) == (20, 2)  # 0.5 s × 40 frames/s
            n = int(clip["mix_rms_length"])
            assert any(torch.equal(clip["mix_rms"][:n], w) for w in windows(own, n))  # a window of its own file
    a2 = items[1]["cond"][0]  # 0.25 s = 10 frames: padded with zeros to 20
    assert int(a2["mix_rms_length"]) == 10 and torch.equal(a2["mix_rms"][:10], items[1]["mix_rms"])
    assert torch.count_nonzero(a2["mix_rms"][10:]) == 0
    batch = module.features([ds[i] for i in range(3)], salt=3)
    assert tuple(batch["cond"].shape) == (3, 2, 20, 2) and batch["cond_length"].tolist() == [[20, 20], [10, 10], [20, 20]]
    assert torch.isfinite(module.backbone.training_losses(batch)["loss"])


def test_clips_from_the_same_group_come_from_another_file_of_it(rows, tmp_path):
    spec = ClipSpec("cond", count=2, seconds=(0.5, 0.5), source="same_group", features={"mix_rms": (RATE, 0)},
                    start="beginning", pad=True)
    ds, module = build(rows, [spec], tmp_path / "cache")
    assert ds.groups == ["A", "A", "B"] and ds.same_group(0) == [1] and ds.same_group(2) == []
    items = clips_of(ds, module, salt=0)
    a1, a2, b1 = items
    for clip in a1["cond"]:  # a1's clips are a2 (10 frames, padded to 20)
        assert torch.equal(clip["mix_rms"][:10], a2["mix_rms"]) and int(clip["mix_rms_length"]) == 10
    for clip in a2["cond"]:  # a2's clips are the first 0.5 s of a1
        assert torch.equal(clip["mix_rms"], a1["mix_rms"][:20]) and int(clip["mix_rms_length"]) == 20
    for clip in b1["cond"]:  # B has no other file: its own
        assert torch.equal(clip["mix_rms"], b1["mix_rms"][:20])
    # "either": the example itself or its group, chosen by the seed
    picks = {j for s in range(40) for j in choose_sources(ClipSpec("c", count=2, source="either", features={"x": (1, 0)}),
                                                          0, [1], clip_seed(7, s, 0))}
    assert picks == {0, 1}


def test_clips_are_the_same_for_the_same_step_and_seed_and_after_a_resume_and_differ_across_steps(rows, tmp_path):
    spec = ClipSpec("cond", count=2, seconds=(0.3, 0.6), source="same_file", features={"mix_rms": (RATE, 0)},
                    start="random", pad=True)
    ds, module = build(rows, [spec], tmp_path / "cache")

    def cond_of(module, ds, salt):
        return module.features([ds[0], ds[2]], salt=salt)["cond"]

    first = cond_of(module, ds, 5)
    assert torch.equal(first, cond_of(module, ds, 5))
    # a resumed run: a new dataset and module from the same cache and config cut the same clips at that step
    ds2, module2 = build(rows, [spec], tmp_path / "cache")
    assert torch.equal(first, cond_of(module2, ds2, 5))
    # the salt the training step passes is global_step * 64 + batch_idx: other steps cut other clips
    others = [cond_of(module, ds, s) for s in (6, 64, 128)]
    assert all(not torch.equal(first, o) for o in others)
    # and another run seed, other clips
    _, module3 = build(rows, [spec], tmp_path / "cache", seed=8)
    assert not torch.equal(first, cond_of(module3, ds, 5))


def test_clips_on_cached_features_and_on_raw_audio_are_identical_with_cache_on_and_off(rows, tmp_path):
    feats = ClipSpec("cond", count=2, seconds=(0.4, 0.4), source="same_group", features={"mix_rms": (RATE, 0)},
                     start="random", pad=True)
    audio = ClipSpec("voice", count=2, seconds=(0.5, 0.5), source="same_group", stream="vocal", start="random",
                     pad=True)
    got = []
    for cache_dir in (tmp_path / "cache", None):
        ds, module = build(rows, [feats, audio], cache_dir)
        got.append(clips_of(ds, module, salt=9))
    for cached, raw in zip(*got):
        for name in ("cond", "voice"):
            for a, b in zip(cached[name], raw[name]):
                assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    a1, a2, _ = got[0]
    for clip in a1["voice"]:  # from a2's vocal: 0.25 s at 8 kHz, zero-padded to 0.5 s
        assert tuple(clip["audio"].shape) == (1, 4000) and int(clip["audio_length"]) == 2000
        assert torch.count_nonzero(clip["audio"][:, 2000:]) == 0 and float(clip["audio"].abs().max()) > 0.25
    for clip in a2["voice"]:  # a random 0.5 s of a1's 1.5 s vocal
        assert tuple(clip["audio"].shape) == (1, 4000) and int(clip["audio_length"]) == 4000


def test_two_conditioning_clips_of_44000_samples_at_22050_hz_as_tortoise_wants():
    spec = ClipSpec("cond", count=2, seconds=(44000 / 22050, 44000 / 22050), source="same_file", stream="main",
                    start="random", pad=True)
    long = {"audio": torch.arange(1, 100_001, dtype=torch.float32)[None], "audio_length": 100_000}
    short = {"audio": torch.ones(1, 30_000), "audio_length": 30_000}
    clips = cut(spec, [long, long, short], seed=3, rates={"audio": (22050.0, -1)})
    assert [tuple(c["audio"].shape) for c in clips] == [(1, 44000)] * 3
    assert [int(c["audio_length"]) for c in clips] == [44000, 44000, 30000]
    starts = [int(c["audio"][0, 0]) - 1 for c in clips[:2]]  # the long source counts its samples
    assert all(torch.equal(c["audio"][0], torch.arange(s + 1, s + 44001, dtype=torch.float32))
               for c, s in zip(clips, starts))
    assert starts[0] != starts[1] and all(0 <= s <= 56000 for s in starts)
    assert float(clips[2]["audio"][0, :30000].min()) == 1.0 and torch.count_nonzero(clips[2]["audio"][0, 30000:]) == 0


def test_a_clip_declaration_names_its_source_once():
    with pytest.raises(ValueError, match="exactly one"):
        ClipSpec("c", features={"x": (1.0, 0)}, stream="main")
    with pytest.raises(ValueError, match="count=0"):
        ClipSpec("c", count=0, features={"x": (1.0, 0)})
