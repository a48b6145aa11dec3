"""Scaled release proportions of VALL-E, SongGen and TorToiSe, for the benchmark's per-plugin parts.

Every width of a released model is divided by ``scale`` (depths, vocabularies of codes and the audio layouts -
sample rates, hops, frame rates, codebooks - kept), so a training step takes about a second on 2 cores while
compute per second of audio keeps its proportions (widths / k make a convolution's or a linear layer's cost
at a given length k² smaller for the trainable model and the frozen encoders alike). Embedding tables scale by
k, not k², so at scale 16 they would weigh more in the trainable model than at release size; each frozen
encoder's width (or, for T5, its vocabulary, 90% of which no description uses) is therefore fitted so that it
keeps its *release share of the trainable model's parameter count*, as part 2 does for ACE-Step's vocoder
and UMT5. Release counts (seeded builds on the meta device of the plugins' presets and transformers' configs):

* VALL-E ``full`` AR+NAR 237.97 M; frozen: EnCodec 24 kHz 14.85 M (0.062; encoder + decoder, the decoder is
  built but only the encoder runs) and espeak-ng's phonemizer (a program: a fixed cost per utterance).
* SongGen ``mixed_pro`` (trainable: decoder, lyrics Conformer, projections, prompt embeddings) 529.50 M; frozen:
  flan-t5-large's encoder 341.23 M (0.644), X-Codec (hubert_general) 160.70 M (0.303), MERT-v1-330M 315.44 M
  (0.596; run over 3 s voice crops of the vocal stem).
* TorToiSe ``release`` UnifiedVoice 421.53 M; frozen: the DVAE 51.57 M (0.122), plus the log-mel of the
  padded clip and of the conditioning crops (fixed costs: no weights).

``presets(plugin, scale)`` gives the scaled configs with their counts; ``install(plugin, p)`` makes the
plugin's ``tiny`` preset (and its tiny random encoders) be them in this process, plugin code unchanged.
"""
from __future__ import annotations

from typing import Any, Callable

#: release parameter counts (module doc): {plugin: {part: params}}; the first part is the trainable model
RELEASE = {
    "valle": {"backbone": 237_968_641, "encodec": 14_851_810},
    "songgen": {"backbone": 529_497_114, "t5": 341_231_104, "xcodec": 160_698_625, "mert": 315_438_720},
    "tortoise": {"backbone": 421_526_786, "dvae": 51_567_184},
}
#: what each frozen part is, for the report
FROZEN_NOTE = {
    "valle": "EnCodec 24 kHz codes of the clip and of its same-speaker prompt, espeak-ng phonemes (fixed)",
    "songgen": "X-Codec codes of the mix and the vocal stem, flan-t5 states of the description, MERT states of "
               "two 3 s vocal crops",
    "tortoise": "mel + DVAE codes of the clip padded to 11.6 s, log-mels of the two conditioning crops (fixed)",
}


def count(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


def fit_unit(size_of: Callable[[int], int], target: float, lo: int = 1, hi: int = 256) -> int:
    """The integer width unit whose part size is nearest ``target`` (the size grows with the unit: bisect)."""
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if size_of(mid) < target else (lo, mid)
    return min((lo, hi), key=lambda u: abs(size_of(u) - target))


def _scaled_share(plugin: str, part: str, n_backbone: int) -> float:
    r = RELEASE[plugin]
    return r[part] / r["backbone"] * n_backbone


# ---------------------------------------------------------------------------------------------
# VALL-E
# ---------------------------------------------------------------------------------------------
def _encodec(u: int) -> dict[str, Any]:
    """EnCodec 24 kHz (transformers' default config) with num_filters u (release 32), hidden and codebook dim 4u."""
    from audiotrain_valle import codec

    return {**codec.TINY_CONFIG, "hidden_size": 4 * u, "num_filters": u, "codebook_dim": 4 * u,
            "num_lstm_layers": 2, "codebook_size": 1024, "target_bandwidths": [1.5, 3.0, 6.0, 12.0, 24.0]}


def _valle(k: int) -> dict[str, Any]:
    import torch
    from transformers import EncodecConfig, EncodecModel

    from audiotrain_valle import presets
    from audiotrain_valle.ar_nar import ARNAR

    full = presets.PRESETS["full"]
    model = {**full, "dim": full["dim"] // k, "heads": max(1, full["heads"] // k)}
    with torch.device("meta"):
        n = count(ARNAR(dict(model)))
        size = lambda u: count(EncodecModel(EncodecConfig(**_encodec(u))))  # noqa: E731
        u = fit_unit(size, _scaled_share("valle", "encodec", n), 1, 32)
        return {"model": model, "codec": _encodec(u), "params": {"backbone": n, "encodec": size(u)}}


# ---------------------------------------------------------------------------------------------
# SongGen
# ---------------------------------------------------------------------------------------------
def _mert(u: int) -> dict[str, Any]:
    """MERT-v1-330M (HuBERT-large shaped: 24 layers, 16 heads) at hidden 16u (release 1024 = u 64)."""
    from audiotrain_songgen import mert

    return {**mert.TINY_MERT, "hidden_size": 16 * u, "num_attention_heads": 16, "intermediate_size": 64 * u,
            "conv_dim": [8 * u] * 7, "num_conv_pos_embeddings": 128, "num_conv_pos_embedding_groups": 16}


def _xcodec(u: int) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """X-Codec hubert_general (transformers' default) at 1/64 of its widths times u: (acoustic, semantic, top)."""
    from audiotrain_songgen import codec

    acoustic = {**codec.TINY_ACOUSTIC, "encoder_hidden_size": u, "hidden_size": 4 * u, "decoder_hidden_size": 16 * u,
                "n_codebooks": 9, "codebook_size": 1024, "codebook_dim": 8}
    semantic = {**codec.TINY_SEMANTIC, "hidden_size": 12 * u, "num_hidden_layers": 12, "num_attention_heads": 12,
                "intermediate_size": 48 * u, "conv_dim": [8 * u] * 7, "num_conv_pos_embeddings": 128,
                "num_conv_pos_embedding_groups": 4}  # release 16 groups of 768: 12u channels split in 4
    return acoustic, semantic, {**codec.TINY_TOP, "codebook_dim": 16 * u}


def _songgen(k: int) -> dict[str, Any]:
    import torch
    from transformers import HubertConfig, HubertModel, T5EncoderModel, XcodecConfig, XcodecModel

    from audiotrain_songgen import presets
    from audiotrain_songgen.composite import SongGenComposite, t5_config

    rel = presets.MIXED_PRO
    dec = rel["decoder"]
    t5 = {**rel["text_encoder"], "d_model": 1024 // k, "d_kv": 64, "d_ff": 2816 // k, "num_heads": max(1, 16 // k)}
    model = {**rel, "decoder": {**dec, "hidden_size": dec["hidden_size"] // k, "ffn_dim": dec["ffn_dim"] // k,
                                "num_attention_heads": max(1, dec["num_attention_heads"] // k)},
             "lyrics_encoder": {**rel["lyrics_encoder"], "attention_heads": max(1, 16 // k),
                                "linear_units": rel["lyrics_encoder"]["linear_units"] // k},
             "text_encoder": t5, "mert": {"hidden_size": 1024 // k, "num_layers": 25}}
    with torch.device("meta"):
        whole = SongGenComposite(model)
        n = count(whole) - count(whole.text_encoder)
        t5_body = count(T5EncoderModel(t5_config(model))) - t5["vocab_size"] * t5["d_model"]
        vocab = max(384, round((_scaled_share("songgen", "t5", n) - t5_body) / t5["d_model"]))
        model["text_encoder"] = {**t5, "vocab_size": vocab}
        n_t5 = count(T5EncoderModel(t5_config(model)))
        xsize = lambda u: count(XcodecModel(XcodecConfig(  # noqa: E731
            acoustic_model_config=_xcodec(u)[0], semantic_model_config=_xcodec(u)[1], **_xcodec(u)[2])))
        ux = fit_unit(xsize, _scaled_share("songgen", "xcodec", n), 1, 64)
        msize = lambda u: count(HubertModel(HubertConfig(**_mert(u))))  # noqa: E731
        um = fit_unit(msize, _scaled_share("songgen", "mert", n), 1, 64)
        model["mert"]["hidden_size"] = 16 * um  # the voice branch takes MERT's width
        whole = SongGenComposite(model)
        n = count(whole) - count(whole.text_encoder)
        return {"model": model, "xcodec": _xcodec(ux), "mert": _mert(um),
                "params": {"backbone": n, "t5": n_t5, "xcodec": xsize(ux), "mert": msize(um)}}


# ---------------------------------------------------------------------------------------------
# TorToiSe
# ---------------------------------------------------------------------------------------------
def _tortoise(k: int) -> dict[str, Any]:
    import torch

    from audiotrain_tortoise import presets
    from audiotrain_tortoise.dvae import DiscreteVAE
    from audiotrain_tortoise.unified_voice import UnifiedVoice

    rel = presets.RELEASE
    model = {**rel, "model_dim": rel["model_dim"] // k, "heads": max(1, rel["heads"] // k)}
    dvae = lambda u: {**presets.DVAE_RELEASE, "hidden_dim": 8 * u, "codebook_dim": 8 * u}  # noqa: E731  release u 64
    with torch.device("meta"):
        n = count(UnifiedVoice(presets.resolve_config(dict(model))))
        size = lambda u: count(DiscreteVAE(presets.resolve_dvae_config(dvae(u))))  # noqa: E731
        u = fit_unit(size, _scaled_share("tortoise", "dvae", n), 1, 64)
        return {"model": model, "dvae": dvae(u), "params": {"backbone": n, "dvae": size(u)}}


def presets(plugin: str, scale: int) -> dict[str, Any]:
    return {"valle": _valle, "songgen": _songgen, "tortoise": _tortoise}[plugin](int(scale))


def install(plugin: str, p: dict[str, Any]) -> None:
    """Make ``model.preset=tiny`` (and the tiny random encoders) mean the scaled ``p`` in this process."""
    if plugin == "valle":
        from audiotrain_valle import codec, presets as pr

        pr.PRESETS["tiny"] = dict(p["model"])
        codec.TINY_CONFIG.clear()
        codec.TINY_CONFIG.update(p["codec"])
    elif plugin == "songgen":
        from audiotrain_songgen import codec, mert, presets as pr

        pr.PRESETS["tiny"] = p["model"]
        for target, values in zip((codec.TINY_ACOUSTIC, codec.TINY_SEMANTIC, codec.TINY_TOP), p["xcodec"]):
            target.clear()
            target.update(values)
        mert.TINY_MERT.clear()
        mert.TINY_MERT.update(p["mert"])
    elif plugin == "tortoise":
        from audiotrain_tortoise import presets as pr

        pr.PRESETS["tiny"] = dict(p["model"])
        pr.DVAE_PRESETS["tiny"] = dict(p["dvae"])
    else:
        raise ValueError(plugin)


def describe(plugin: str, p: dict[str, Any], scale: int) -> str:
    """One line: the scaled counts and each frozen part's share beside the release's."""
    n, r = p["params"]["backbone"], RELEASE[plugin]
    parts = ", ".join(f"{k} {v / 1e6:.2f} M ({v / n:.3f}, release {r[k] / r['backbone']:.3f})"
                      for k, v in p["params"].items() if k != "backbone")
    return f"release widths / {scale} (depths kept): trainable {n / 1e6:.2f} M; frozen: {parts}"
