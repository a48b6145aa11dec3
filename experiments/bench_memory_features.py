"""The batch of one measurement of ``make bench-memory``: one example's cached features as each plugin's feature
cache holds them (random values, the shapes its collate sees at a clip length). Also the batches of
``bench_bucketing.py``."""
from __future__ import annotations

from typing import Any


def _items(plugin: str, seconds: float, g: Any, widths: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """One example's cached features, as the plugin's feature cache holds them, random values. ``widths``: the
    feature widths of a scaled model (SongGen's ``text`` and ``mert``; default the release's 1024)."""
    import torch

    w = {"text": 1024, "mert": 1024, **(widths or {})}
    if plugin == "acestep":
        frames = -(-(-(-int(seconds * 48000) * 44100 // 48000)) // 4096)  # ceil(ceil(N*44100/48000)/4096)
        return [{"latents": torch.randn(8, 16, frames, generator=g), "text_hidden": torch.randn(64, 768, generator=g),
                 "text_mask": torch.ones(64), "lyric_token_ids": torch.randint(1, 6693, (512,), generator=g),
                 "lyric_mask": torch.ones(512), "speaker_emb": torch.zeros(512)}]
    if plugin == "valle":
        frames, prompt = int(seconds * 75), int(4.5 * 75)
        return [{"phns": torch.randint(0, 256, (int(15 * seconds),), generator=g),
                 "codes": torch.randint(0, 1024, (frames, 8), generator=g),
                 "prompt": [{"codes": torch.randint(0, 1024, (prompt, 8), generator=g)}]}]
    if plugin == "songgen":
        frames = int(seconds * 50)
        return [{"codes_mix": torch.randint(0, 1024, (8, frames), generator=g),
                 "codes_vocal": torch.randint(0, 1024, (8, frames), generator=g),
                 "codes_acc": torch.randint(0, 1024, (8, frames), generator=g),
                 "text_hidden": torch.randn(64, w["text"], generator=g), "text_mask": torch.ones(64),
                 "lyrics_ids": torch.randint(1, 7000, (300,), generator=g),
                 "mert_hidden": torch.randn(224, 25, w["mert"], generator=g).half(), "voice_on": torch.tensor(True)}]
    if plugin == "tortoise":  # 11.6 s (255,995 samples): 160 text ids; shorter clips fewer. Codes: of the wav padded
        samples = round(seconds * 22050)  # to 255,995 samples (250), as cached; the model crops to the batch's longest
        return [{"text_ids": torch.randint(1, 255, (max(1, round(160 * samples / 255995)),), generator=g),
                 "codes": torch.randint(0, 8192, (250,), generator=g),
                 "wav_length": torch.tensor(samples),
                 "conditioning": [{"mel": torch.randn(80, 172, generator=g), "mel_length": 172} for _ in range(2)]}]
    raise ValueError(plugin)
