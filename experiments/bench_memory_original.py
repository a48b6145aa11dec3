"""The original trainers' per-step front ends of ``make bench-memory``'s ``original`` row: the frozen encoders
ACE-Step's trainer.py and TorToiSe's DLAS run on every step, at release size in fp32 with random weights."""
from __future__ import annotations

from typing import Any

from bench_common import SEED


def _acestep_original(seconds: float, tcfg: dict[str, Any], device: str = "cpu"):
    """trainer.py's frozen encoders at release size (fp32, random weights) and the per-step encoding of the raw
    clip: DC-AE latents, UMT5 states of the prompt, the REPA teachers' features. Returns (modules, encode)."""
    import torch
    import transformers
    from transformers import UMT5EncoderModel

    from audiotrain_acestep import text_encoder
    from audiotrain_acestep.music_dcae import MusicDCAE
    from audiotrain_acestep.ssl_teachers import MERT, MHUBERT, SSLTeacherFeature
    from bench_cache import TEACHERS, teacher_config

    torch.manual_seed(SEED)
    dcae = MusicDCAE.from_preset("v1").eval().requires_grad_(False)
    c = text_encoder.tiny_umt5_config()
    for key, val in dict(d_model=768, d_kv=64, d_ff=2048, num_layers=12, num_heads=12, vocab_size=256384).items():
        setattr(c, key, val)
    umt5 = UMT5EncoderModel(c).eval().requires_grad_(False)
    teachers = SSLTeacherFeature([(spec, transformers.HubertModel(transformers.HubertConfig(**teacher_config(TEACHERS[k], 1))))
                                  for spec, k in ((MERT, "mert"), (MHUBERT, "mhubert"))])
    g = torch.Generator().manual_seed(SEED + 1)
    audio = (0.1 * torch.randn(2, int(seconds * 48000), generator=g)).to(device)
    ids = torch.randint(1, 256384, (1, 64), generator=g).to(device)
    for module in (dcae, umt5, teachers):  # on the GPU for make bench-gpu (tests/gpu), else where they are
        if device != "cpu":
            module.to(device)

    @torch.no_grad()
    def encode() -> dict[str, Any]:
        latents, _ = dcae.encode(audio[None], torch.tensor([audio.shape[-1]], device=audio.device))
        hidden = umt5(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
        feats = {"latents": latents[0].float(), "text_hidden": hidden[0].float(), "text_mask": torch.ones(64),
                 "lyric_token_ids": torch.randint(1, 6693, (512,), generator=g), "lyric_mask": torch.ones(512),
                 "speaker_emb": torch.zeros(int(tcfg["speaker_embedding_dim"]))}
        feats.update(teachers.encode({"audio": audio}))
        return {k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in feats.items()}  # collated as cached

    counts = {"dcae": sum(p.numel() for p in dcae.dcae.parameters()),
              "vocoder": sum(p.numel() for p in dcae.vocoder.parameters()),
              "umt5": sum(p.numel() for p in umt5.parameters()),
              "mert": sum(p.numel() for p in teachers.models[0].parameters()),
              "mhubert": sum(p.numel() for p in teachers.models[1].parameters())}
    return counts, encode


def _tortoise_original(cfg: Any):
    """DLAS's per-step front end: the mel of the clip, the release DVAE's codes of the padded wav, the conditioning
    mels (two 172-frame crops of the clip's mel), all fp32."""
    import torch

    from audiotrain_tortoise.dvae import DiscreteVAE
    from audiotrain_tortoise.features import PADDED_SAMPLES, SpeechFrontEnd
    from audiotrain_tortoise.mel import MelSpectrogram

    torch.manual_seed(SEED)
    front = SpeechFrontEnd(MelSpectrogram(None), DiscreteVAE("release")).eval().requires_grad_(False)
    g = torch.Generator().manual_seed(SEED + 1)
    wav = 0.1 * torch.randn(PADDED_SAMPLES, generator=g)

    def encode() -> dict[str, Any]:
        out = front(wav)
        mel = out["mel"]
        crops = [{"mel": mel[:, s:s + 172].contiguous(), "mel_length": 172} for s in (0, mel.shape[-1] - 172)]
        return {"text_ids": torch.randint(1, 255, (160,), generator=g), "codes": out["codes"],
                "wav_length": out["wav_length"], "conditioning": crops}

    return {"dvae": sum(p.numel() for p in front.dvae.parameters())}, encode

