"""TorToiSe's autoregressive model, UnifiedVoice (``autoregressive.pth``), as DL-Art-School trains it for AIVC.

A GPT-2 (:mod:`.gpt2`) reads, in one causal sequence, the conditioning vectors of the reference clips
(:mod:`.conditioning`), the text and the DVAE mel codes, and predicts the next text token and the next mel code.

State-dict names (exactly the released file's 410 parameter tensors, 421,526,786 values; spec §3.5)::

    conditioning_encoder.init.*, conditioning_encoder.attn.{0..5}.{norm,qkv,proj_out}.*
    text_embedding.weight          (number_text_tokens, D)
    mel_embedding.weight           (number_mel_codes, D)
    gpt.h.{N}.*, gpt.ln_f.*        HF GPT-2 layout, Conv1D weights (in, out)
    mel_pos_embedding.emb.weight   (max_mel_tokens + 2 + max_conditioning_inputs, D)
    text_pos_embedding.emb.weight  (max_text_tokens + 2, D)
    final_norm.*, text_head.*, mel_head.*

Older files also carry GPT-2's ``gpt.h.N.attn.bias`` / ``attn.masked_bias`` mask buffers; they are not part of this
module (see :mod:`.checkpoint`, which drops them before the strict load).

Forward (spec §3.1), ``cond_mels`` (B, n_clips, 80, frames), ``text`` (B, Lmax) padded with 0, ``text_lengths`` (B),
``codes`` (B, Mmax) DVAE codes, ``wav_lengths`` (B) in samples:

1. ``tortoise_compat``: ``wav_lengths *= mel_length_compression`` (the caller's tensor is not changed).
2. text cropped to ``max(text_lengths)``, stop token 0 appended.
3. codes cropped to ``max(wav_lengths) // mel_length_compression``, stop 8193 appended.
4. ``set_mel_padding``: in row b every position ≥ ``wav_lengths[b] // mel_length_compression + 1`` becomes stop.
   (With tortoise_compat, 3 and 4 change nothing: the model learns every code of the zero-padded clip, then stop.)
5. ``text_in = [start_text] + text``, ``text_tgt = text + [stop_text]``; the same for the codes with 8192 / 8193.
6. ``emb = [cond vectors, text_embedding(text_in) + text_pos, mel_embedding(mel_in) + mel_pos]`` → GPT-2; output
   position 0 is dropped; ``final_norm``; text logits from the first ``len(text_in)`` positions, mel logits from the
   last ``len(mel_in)``. (With 2 clips the text logits are one position early, as in DLAS: spec §3.1.)
7. ``loss_text_ce`` / ``loss_mel_ce``: mean cross-entropy, padding and stop positions included (no ignore index).

Returns ``(loss_text_ce, loss_mel_ce, mel_logits)``, mel logits (B, number_mel_codes, len(mel_in)) as DLAS returns
them (classes before time). ``return_latent=True`` returns the mel latents (B, len(mel_in) − 2, D) instead (− 1
without tortoise_compat), as DLAS does.

Inference as TorToiSe plays it: :meth:`conditioning_latents` averages the clips into one vector (B, D);
:meth:`sample` generates mel codes after ``[latent, text]`` (greedy or temperature / top-p sampling, until
``stop_mel_token`` or ``max_codes``). It runs ``[latent, text, start]`` once into a GPT-2 KV cache, then one new
mel code per step at its own learned position; ``use_cache=False`` reruns the whole sequence every step instead
(the reference the cache is tested against).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .conditioning import ConditioningEncoder
from .gpt2 import GPT2, KVCache
from .presets import context_length, mel_positions, resolve_config, text_positions

MEL_CHANNELS = 80
COND_BLOCKS = 6
INIT_STD = 0.02


class LearnedPositions(nn.Module):
    """``emb``: a learned table; ``forward(length)`` its first ``length`` rows (1, length, D)."""

    def __init__(self, positions: int, dim: int, what: str) -> None:
        super().__init__()
        self.what = what
        self.emb = nn.Embedding(positions, dim)
        nn.init.normal_(self.emb.weight, std=INIT_STD)

    def forward(self, length: int) -> torch.Tensor:
        if length > self.emb.num_embeddings:
            raise ValueError(f"a {self.what} sequence of {length} tokens (with start and stop) is longer than the "
                             f"model's {self.emb.num_embeddings} {self.what} positions")
        return self.emb.weight[:length].unsqueeze(0)

    def at(self, index: int) -> torch.Tensor:
        """Row ``index`` alone, (1, 1, D): the position of one new token."""
        self(index + 1)  # the same bound as a sequence reaching this position
        return self.emb.weight[index].view(1, 1, -1)


class UnifiedVoice(nn.Module):
    """UnifiedVoice built from a preset name or config (see :mod:`.presets`); the module doc gives the forward."""

    def __init__(self, cfg: str | Mapping[str, Any] = "release") -> None:
        super().__init__()
        self.cfg = c = resolve_config(cfg)
        dim = int(c["model_dim"])
        self.compat = bool(c["tortoise_compat"])
        self.compression = int(c["mel_length_compression"])
        self.start_text, self.stop_text = int(c["start_text_token"]), int(c["stop_text_token"])
        self.start_mel, self.stop_mel = int(c["start_mel_token"]), int(c["stop_mel_token"])
        self.conditioning_encoder = ConditioningEncoder(MEL_CHANNELS, dim, int(c["heads"]), COND_BLOCKS,
                                                        str(c["cond_residual"]))
        self.text_embedding = nn.Embedding(int(c["number_text_tokens"]), dim)
        self.mel_embedding = nn.Embedding(int(c["number_mel_codes"]), dim)
        self.gpt = GPT2(int(c["layers"]), dim, int(c["heads"]), context_length(c), float(c["dropout"]),
                        bool(c["checkpointing"]))
        self.mel_pos_embedding = LearnedPositions(mel_positions(c), dim, "mel")
        self.text_pos_embedding = LearnedPositions(text_positions(c), dim, "text")
        self.final_norm = nn.LayerNorm(dim)
        self.text_head = nn.Linear(dim, int(c["number_text_tokens"]))
        self.mel_head = nn.Linear(dim, int(c["number_mel_codes"]))
        for table in (self.text_embedding, self.mel_embedding):
            nn.init.normal_(table.weight, std=INIT_STD)

    # ------------------------------------------------------------------------------------------ inputs
    def set_mel_padding(self, codes: torch.Tensor, wav_lengths: torch.Tensor) -> torch.Tensor:
        """A copy of ``codes`` whose positions from ``wav_lengths // mel_length_compression + 1`` on are stop."""
        ends = torch.div(wav_lengths, self.compression, rounding_mode="trunc") + 1
        positions = torch.arange(codes.size(1), device=codes.device)
        return codes.masked_fill(positions[None, :] >= ends.to(codes.device)[:, None], self.stop_mel)

    def prepare_targets(self, text: torch.Tensor, text_lengths: torch.Tensor, codes: torch.Tensor,
                        wav_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Steps 1–5 of the module doc: ``(text_in, text_tgt, mel_in, mel_tgt)``, each (B, L) long."""
        wav_lengths = wav_lengths.long() * (self.compression if self.compat else 1)
        text = text[:, :int(text_lengths.max())].long()
        codes = codes[:, :int(wav_lengths.max()) // self.compression].long()
        text = F.pad(text, (0, 1), value=self.stop_text)
        codes = self.set_mel_padding(F.pad(codes, (0, 1), value=self.stop_mel), wav_lengths)
        return (F.pad(text, (1, 0), value=self.start_text), F.pad(text, (0, 1), value=self.stop_text),
                F.pad(codes, (1, 0), value=self.start_mel), F.pad(codes, (0, 1), value=self.stop_mel))

    def conditioning_tokens(self, cond_mels: torch.Tensor) -> torch.Tensor:
        """(B, n_clips, 80, frames) (or (B, 80, frames): one clip) → (B, n_clips, D), one vector per clip."""
        if cond_mels.dim() == 3:
            cond_mels = cond_mels.unsqueeze(1)
        b, n = cond_mels.shape[:2]
        return self.conditioning_encoder(cond_mels.flatten(0, 1)).view(b, n, -1)

    def conditioning_latents(self, cond_mels: torch.Tensor) -> torch.Tensor:
        """TorToiSe's ``get_conditioning``: the clips' vectors averaged, (B, D)."""
        return self.conditioning_tokens(cond_mels).mean(dim=1)

    def _text_emb(self, text_in: torch.Tensor) -> torch.Tensor:
        return self.text_embedding(text_in) + self.text_pos_embedding(text_in.size(1))

    def _mel_emb(self, mel_in: torch.Tensor) -> torch.Tensor:
        return self.mel_embedding(mel_in) + self.mel_pos_embedding(mel_in.size(1))

    # ------------------------------------------------------------------------------------------ training
    def latents(self, conds: torch.Tensor, text_in: torch.Tensor, mel_in: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Step 6 up to ``final_norm``: ``(text latents (B, Lt, D), mel latents (B, Lm, D))``."""
        emb = torch.cat([conds, self._text_emb(text_in), self._mel_emb(mel_in)], dim=1)
        enc = self.final_norm(self.gpt(emb)[:, 1:])
        return enc[:, :text_in.size(1)], enc[:, -mel_in.size(1):]

    def logits(self, conds: torch.Tensor, text_in: torch.Tensor, mel_in: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(text logits (B, number_text_tokens, Lt), mel logits (B, number_mel_codes, Lm))``."""
        text_lat, mel_lat = self.latents(conds, text_in, mel_in)
        return self.text_head(text_lat).transpose(1, 2), self.mel_head(mel_lat).transpose(1, 2)

    def forward(self, cond_mels: torch.Tensor, text: torch.Tensor, text_lengths: torch.Tensor,
                codes: torch.Tensor, wav_lengths: torch.Tensor, return_latent: bool = False):
        """``(loss_text_ce, loss_mel_ce, mel_logits)`` (module doc); ``return_latent``: the mel latents only."""
        text_in, text_tgt, mel_in, mel_tgt = self.prepare_targets(text, text_lengths, codes, wav_lengths)
        conds = self.conditioning_tokens(cond_mels)
        if return_latent:
            return self.latents(conds, text_in, mel_in)[1][:, :-2 if self.compat else -1]
        text_logits, mel_logits = self.logits(conds, text_in, mel_in)
        loss_text = F.cross_entropy(text_logits.float(), text_tgt)
        loss_mel = F.cross_entropy(mel_logits.float(), mel_tgt)
        return loss_text, loss_mel, mel_logits

    # ------------------------------------------------------------------------------------------ inference
    @torch.no_grad()
    def sample(self, text: torch.Tensor, cond_latents: torch.Tensor, *, max_codes: int | None = None,
               temperature: float = 1.0, top_p: float = 1.0, greedy: bool = False,
               generator: torch.Generator | None = None, use_cache: bool = True) -> list[torch.Tensor]:
        """Mel codes for ``text`` ((L,) or (B, L) token ids, no start/stop, rows of one length) after
        ``cond_latents`` ((D,) or (B, D), from :meth:`conditioning_latents`): one 1-D tensor per row, the codes
        before the first stop token (at most ``max_codes``; default and cap: max_mel_tokens, or what the context
        leaves after the text). Greedy, or sampled at ``temperature`` from the smallest top-``top_p`` set.
        ``use_cache=False``: no KV cache, the whole sequence rerun every step (same codes, slower)."""
        was_training = self.training
        self.train(False)  # no dropout in a preview, whatever mode the training loop left the model in
        try:
            choose = lambda logits: (logits.argmax(-1) if greedy or temperature <= 0  # noqa: E731
                                     else _draw(logits / temperature, top_p, generator))
            return self.sample_steps(text, cond_latents, max_codes, choose, use_cache)
        finally:
            self.train(was_training)

    def sample_steps(self, text: torch.Tensor, cond_latents: torch.Tensor, max_codes: int | None,
                     choose: Callable[[torch.Tensor], torch.Tensor], use_cache: bool = True) -> list[torch.Tensor]:
        """:meth:`sample` with ``choose`` mapping each step's mel logits (B, number_mel_codes) float to the next
        codes (B,) long; no grad, the caller sets the mode."""
        text = text.long()
        text = text[None] if text.dim() == 1 else text
        latents = cond_latents.view(-1, cond_latents.size(-1))
        b = text.size(0)
        if latents.size(0) == 1 and b > 1:
            latents = latents.expand(b, -1)
        text_in = F.pad(F.pad(text, (0, 1), value=self.stop_text), (1, 0), value=self.start_text)
        prefix = torch.cat([latents.unsqueeze(1).to(self.text_embedding.weight.dtype), self._text_emb(text_in)], dim=1)
        # step k runs the prefix and k mel tokens: k may reach the context left and the mel positions
        room = min(self.gpt.n_positions - prefix.size(1), self.mel_pos_embedding.emb.num_embeddings,
                   int(self.cfg["max_mel_tokens"]))
        steps = max(room if max_codes is None else min(int(max_codes), room), 0)
        mel = torch.full((b, 1), self.start_mel, dtype=torch.long, device=text.device)
        done = torch.zeros(b, dtype=torch.bool, device=text.device)
        with torch.no_grad():
            cache = KVCache(len(self.gpt.h)) if use_cache else None
            if cache is not None and steps:
                hidden = self.gpt(torch.cat([prefix, self._mel_emb(mel)], dim=1), cache=cache)[:, -1]
            for step in range(steps):
                if cache is None:
                    hidden = self.gpt(torch.cat([prefix, self._mel_emb(mel)], dim=1))[:, -1]
                nxt = choose(self.mel_head(self.final_norm(hidden)).float())
                nxt = torch.where(done, torch.full_like(nxt, self.stop_mel), nxt)
                mel = torch.cat([mel, nxt[:, None]], dim=1)
                done |= nxt == self.stop_mel
                if bool(done.all()):
                    break
                if cache is not None and step < steps - 1:  # the new code at mel position len - 1
                    new = self.mel_embedding(nxt[:, None]) + self.mel_pos_embedding.at(mel.size(1) - 1)
                    hidden = self.gpt(new, cache=cache)[:, -1]
        out = []
        for row in mel[:, 1:]:
            stops = (row == self.stop_mel).nonzero()
            out.append(row[:int(stops[0])] if len(stops) else row)
        return out


def _draw(logits: torch.Tensor, top_p: float, generator: torch.Generator | None) -> torch.Tensor:
    """One id per row from softmax(logits), restricted to the smallest set whose probability reaches ``top_p``."""
    probs = torch.softmax(logits, dim=-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        drop = sorted_p.cumsum(-1) - sorted_p >= top_p  # keep every id until the mass before it reaches top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
