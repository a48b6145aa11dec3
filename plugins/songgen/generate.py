"""SongGen generation (spec songgen.md §3.3, §3.4, §3.6): autoregressive sampling over the decoder, and the tokens
turned into audio.

- :func:`sample` runs the decoder one step at a time from the all-BOS decoder-start column. Every step: the
  logits of the last position per stream, ``/ temperature``; EOS forbidden for the first ``num_codebooks + 1``
  steps (``min_new_tokens``) and, per stream, until every earlier codebook of its sample (of its track, for the
  parallel patterns) has emitted EOS (``patterns.order_eos``: SongGenLogitsProcessor); one token drawn per stream
  from the softmax with a ``torch.Generator`` (no top-k, no classifier-free guidance: the original has neither);
  then the pattern's forced tokens (``patterns.pattern_mask``: the delay's BOS, the tail's EOS) and PAD after a
  stream's EOS (``patterns.force_step``). It stops when every stream of every sample has ended, at the latest
  after ``max_frames`` frames (the mask's tail forces EOS there).
- :func:`to_audio` strips the pattern (``patterns.extract_codes``: undelay, drop every frame holding a token
  >= 1024) and X-Codec decodes it to 16 kHz mono: ``{"mix"}`` for mixed / mixed_pro, ``{"acc", "vocal", "mix"}``
  for the dual-track patterns (each track decoded on its own, the three trimmed to the shorter track, mix = acc
  + vocal). A generation without a single valid frame gives :data:`SILENCE_FRAMES` frames of silence and a note.

Cost: by default (``use_cache=True``) the decoder runs on a KV cache (``kv_cache.KVCache``): each step feeds
only the new column, its self-attention reads the cached keys/values of the prefix, and the cross-attention
keys/values of the memory ([voice ;] description ; lyrics, built once per call) are projected once. The same
cache serves every pattern (the streams of one step are summed into one position; interleaving's acc/vocal
alternation and the parallel tracks are only what the tokens of that position are) and LoRA (it caches the
output of the wrapped projections). ``use_cache=False`` recomputes the whole prefix every step (quadratic in
the length): the reference the cached path is tested against; both give the same tokens for the same seed.

Determinism: the tokens follow from the generator(s) alone (sampling is done on the CPU in float32), so the same
seed gives the same tokens and, the codec being deterministic, the same audio. ``generator`` may be one
generator for the whole batch or one per sample (what the backbone uses: sample ``i`` of a batch then draws
exactly what it draws alone).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch

from audiotrain_songgen import patterns as P
from audiotrain_songgen.kv_cache import KVCache

#: frames of silence returned for a generation without a single valid frame (0.1 s at 50 Hz)
SILENCE_FRAMES = 5
HOP = 320
SAMPLE_RATE = 16000


def _composite(model: Any):
    """The SongGenComposite of a SongGenBackbone (``.model``) or the composite itself."""
    from audiotrain_songgen.composite import SongGenComposite

    if isinstance(model, SongGenComposite):
        return model
    inner = getattr(model, "model", None)
    if isinstance(inner, SongGenComposite):
        return inner
    raise TypeError(f"sample() wants a SongGenBackbone or a SongGenComposite, got {type(model).__name__}")


def max_len_for(frames: int, K: int, pattern: str) -> int:
    """Decoder positions of a generation of ``frames`` frames: the start column plus the pattern's layout."""
    return 1 + P.pattern_length(int(frames), K, pattern)


def max_frames_for(positions: int, K: int, pattern: str) -> int:
    """The most frames whose generated sequence fits ``positions`` decoder positions (0 when none fits)."""
    per = 2 if pattern in P.INTERLEAVING else 1
    return max(0, (int(positions) - 1 - P.pattern_length(0, K, pattern)) // per)


def _draw(probs: torch.Tensor, generator: torch.Generator | Sequence[torch.Generator] | None) -> torch.Tensor:
    """One token per row of ``probs [B, N, V]`` (CPU float32) -> ``[B, N]``."""
    B, N, V = probs.shape
    if generator is None or isinstance(generator, torch.Generator):
        return torch.multinomial(probs.reshape(B * N, V), 1, generator=generator).reshape(B, N)
    if len(generator) != B:
        raise ValueError(f"{len(generator)} generators for a batch of {B}: give one, or one per sample")
    return torch.stack([torch.multinomial(probs[b], 1, generator=g)[:, 0] for b, g in enumerate(generator)])


@torch.no_grad()
def sample(model: Any, text_hidden: torch.Tensor, text_mask: torch.Tensor, lyrics_ids: torch.Tensor,
           lyrics_mask: torch.Tensor, mert_hidden: torch.Tensor | None = None, voice_mask: torch.Tensor | None = None,
           *, pattern: str, max_frames: int, temperature: float = 1.0,
           generator: torch.Generator | Sequence[torch.Generator] | None = None,
           progress: Callable[[int, int], None] | None = None, min_new_tokens: int | None = None,
           use_cache: bool = True) -> torch.Tensor:
    """Generated token rows ``[B, N, L]`` (LongTensor on the CPU; position 0 is the decoder-start column, ``L <=
    1 + pattern_length(max_frames)``; N = 2K for the parallel patterns).

    ``model``: a SongGenBackbone or its SongGenComposite (put it in eval mode: dropout is not turned off here).
    Memory inputs as in ``SongGenComposite.memory`` (batched, the collate's ``text_hidden [B, Lt, d]``,
    ``text_mask [B, Lt]``, ``lyrics_ids [B, Ll]``, ``lyrics_mask [B, Ll]``; optional MERT states and voice mask).
    ``temperature`` 0 is greedy (argmax). ``min_new_tokens`` (default ``K + 1``, as SongGen's eval): EOS is
    forbidden in every stream for that many steps. ``progress(done, total)`` is called after every step.
    ``use_cache=False``: no KV cache, the whole prefix is recomputed each step (same tokens, much slower).
    """
    comp = _composite(model)
    P.check_pattern(pattern)
    K = int(comp.cfg["decoder"]["num_codebooks"])
    N = P.streams(pattern, K)
    heads = comp.decoder.lm_heads
    if len(heads) != N:
        raise ValueError(f"the decoder has {len(heads)} heads but pattern {pattern} needs {N} streams")
    max_frames = int(max_frames)
    if max_frames < 1:
        raise ValueError(f"max_frames={max_frames}: generate at least one frame")
    positions = int(comp.cfg["decoder"]["max_position_embeddings"])
    max_len = max_len_for(max_frames, K, pattern)
    if max_len > positions:
        raise ValueError(f"{max_frames} frames need {max_len} decoder positions under {pattern}; the model has "
                         f"{positions} (at most {max_frames_for(positions, K, pattern)} frames)")
    temperature = float(temperature)
    if temperature < 0:
        raise ValueError(f"temperature={temperature} must be >= 0 (0 = greedy)")
    min_new = K + 1 if min_new_tokens is None else int(min_new_tokens)
    memory, mem_mask = comp.memory(text_hidden, text_mask, lyrics_ids, lyrics_mask, mert_hidden, voice_mask)
    device = memory.device
    B = memory.shape[0]
    mask = P.pattern_mask(B, K, max_len, pattern)  # [B, N, max_len] on the CPU
    seq = mask[..., :1].clone()
    ended = torch.zeros(B, N, dtype=torch.bool)
    group = K if pattern in P.PARALLEL else None
    decoder = comp.decoder.model.decoder
    total = max_len - 1
    cache = KVCache(len(decoder.layers), capacity=max_len) if use_cache else None
    for t in range(1, max_len):
        if cache is None:
            h = decoder(seq.to(device), memory, mem_mask)[:, -1]  # [B, D]: only the last position is read
        else:  # the columns the cache does not hold yet (the start column, then one per step)
            h = decoder(seq[..., cache.length:].to(device), memory, mem_mask, cache=cache)[:, -1]
        logits = torch.stack([head(h) for head in heads], dim=1).float().cpu()  # [B, N, V]
        logits = P.order_eos(logits, ended, group=group)
        if t <= min_new:
            logits[..., P.EOS] = float("-inf")
        if temperature == 0:
            tok = logits.argmax(-1)
        else:
            tok = _draw(torch.softmax(logits / temperature, dim=-1), generator)
        tok = P.force_step(tok, mask[..., t], ended)
        ended |= tok == P.EOS
        seq = torch.cat([seq, tok[..., None]], dim=-1)
        if progress is not None:
            progress(t, total)
        if bool(ended.all()):
            break
    if progress is not None:
        progress(total, total)
    return seq


def _decode(codec: Any, codes: torch.Tensor) -> torch.Tensor:
    """Codes ``[K, T]`` -> wave ``(1, T * 320)`` (T >= 1)."""
    from audiotrain_songgen.codec import decode

    return decode(codec, codes[None])[0]


def _silence() -> torch.Tensor:
    return torch.zeros(1, SILENCE_FRAMES * HOP)


def _note_empty(what: str) -> None:
    from audiotrain.train.console import console

    console.print(f"[yellow]Note:[/] the generated {what} holds no valid frame (the model ended it at once or "
                  f"sampled only special tokens): it is {SILENCE_FRAMES * HOP / SAMPLE_RATE:g} s of silence. Try "
                  f"another seed or a longer-trained model.", highlight=False)


def frames_of(tokens: torch.Tensor, pattern: str, has_start: bool = True) -> int:
    """The valid frames of one generated sample ``[N, L]`` (the shorter track's for the dual-track patterns)."""
    codes = P.extract_codes(tokens, pattern, has_start=has_start)
    return codes.shape[-1] if pattern in P.SINGLE_TRACK else min(codes[0].shape[-1], codes[1].shape[-1])


def to_audio(tokens: torch.Tensor, pattern: str, codec: Any, has_start: bool = True
             ) -> dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]:
    """Generated tokens -> waves ``(1, n)`` float32 at 16 kHz on the CPU: ``{"mix"}`` (mixed, mixed_pro) or
    ``{"acc", "vocal", "mix"}`` (dual-track; equal lengths, the shorter track's). ``tokens`` is one sample
    ``[N, L]`` (a dict) or a batch ``[B, N, L]`` (a list of dicts). ``has_start=False`` for rows without the
    decoder-start column (the training labels). No valid frame: :data:`SILENCE_FRAMES` frames of silence (each
    wave) and a note on the console."""
    tokens = torch.as_tensor(tokens).long().cpu()
    if tokens.dim() == 3:
        return [to_audio(t, pattern, codec, has_start) for t in tokens]
    if tokens.dim() != 2:
        raise ValueError(f"to_audio wants tokens [N, L] or [B, N, L], got {tuple(tokens.shape)}")
    codes = P.extract_codes(tokens, pattern, has_start=has_start)
    if pattern in P.SINGLE_TRACK:
        if codes.shape[-1] == 0:
            _note_empty("song")
            return {"mix": _silence()}
        return {"mix": _decode(codec, codes)}
    acc_codes, vocal_codes = codes
    if min(acc_codes.shape[-1], vocal_codes.shape[-1]) == 0:
        _note_empty("accompaniment" if acc_codes.shape[-1] == 0 else "vocal track")
        return {"acc": _silence(), "vocal": _silence(), "mix": _silence()}
    acc, vocal = _decode(codec, acc_codes), _decode(codec, vocal_codes)
    n = min(acc.shape[-1], vocal.shape[-1])
    acc, vocal = acc[..., :n], vocal[..., :n]
    return {"acc": acc, "vocal": vocal, "mix": acc + vocal}


def stack_waves(waves: Sequence[torch.Tensor]) -> torch.Tensor:
    """Waves ``(1, n_i)`` -> ``(B, 1, max n_i)``, zero-padded at the end."""
    n = max(w.shape[-1] for w in waves)
    out = torch.zeros(len(waves), 1, n)
    for i, w in enumerate(waves):
        out[i, 0, : w.shape[-1]] = w.reshape(-1)
    return out


def conditions_of(text_hidden: torch.Tensor, text_mask: torch.Tensor, lyrics_ids: torch.Tensor) -> dict[str, Any]:
    """One prompt's encoder outputs (``text_hidden [Lt, d]``, ``text_mask [Lt]``, ``lyrics_ids [Ll]``) as a batch
    of one, the memory inputs :func:`sample` takes."""
    lyrics_ids = torch.as_tensor(lyrics_ids).long()
    return {"text_hidden": text_hidden[None].float(), "text_mask": text_mask[None].float(),
            "lyrics_ids": lyrics_ids[None], "lyrics_mask": torch.ones(1, lyrics_ids.shape[-1], dtype=torch.bool)}


def memory_inputs(conditions: Mapping[str, Any]) -> dict[str, Any]:
    """The memory inputs of :func:`sample` from a collated batch (voice inputs when present)."""
    return {k: conditions.get(k) for k in ("text_hidden", "text_mask", "lyrics_ids", "lyrics_mask", "mert_hidden",
                                           "voice_mask")}
