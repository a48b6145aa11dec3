"""VALL-E v5 "ar+nar": one LLaMA that is the AR (level 0) and the NAR (levels 1..n-1) (spec §3.2-3.5).

Batch format of :meth:`ARNAR.forward` (lists hold one entry per sample; codes may be any int dtype):

- ``phns``: list of LongTensor (Lp,) phoneme ids (the tokenizer's BOS ... EOS included);
- ``proms``: list of LongTensor (Tp, n_levels) prompt codes of the same speaker (Tp may be 0);
- ``resps``: list of LongTensor (T, n_levels) target codes, T >= 1;
- ``langs``: LongTensor (B,) or list of language ids.

Every sample becomes ``[phn][sep][lang][sep][rvq level L][sep][prom][sep][resp]``; positions
restart at 0 per segment (``unified_position_ids=False``), the mask is causal for AR and NAR.
Level L is drawn per sample with P(i) = (n - i) / sum ("auto"). L = 0 is the AR: the resp
segment is level-0 codes plus the stop token ``audio_tokens``, and the logit at position t
predicts token t + 1 (the sep before the resp predicts resp[0], the last code predicts stop).
L >= 1 is the NAR: the resp segment embeds levels 0..L-1 and the logit at each resp position
predicts level L there. Only resp tokens are scored (cross entropy with ignore_index -100).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .embeddings import AudioEmbedding, join_segments, pad_batch
from .llama import KVCache, LlamaModel
from .presets import resolve_config

#: LoRA policy of the original for llama (self_attn and mlp, without k_proj), as PEFT suffixes.
LORA_TARGETS = ("self_attn.q_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
IGNORE_INDEX = -100
TOP_K = 10


def head_name(level: int) -> str:
    """Classifier used for target level L: ``AR:0:0`` for L = 0, else ``NAR:{L-1}:{L}``."""
    return "AR:0:0" if level == 0 else f"NAR:{level - 1}:{level}"


def level_weights(n_levels: int, mode: str | Sequence[int] = "auto") -> torch.Tensor:
    """Unnormalised sampling weights (n_levels,): "auto" n - i, "equal" ones, a list = a pool of levels."""
    if mode == "auto":
        return torch.arange(n_levels, 0, -1, dtype=torch.float64)
    if mode == "equal":
        return torch.ones(n_levels, dtype=torch.float64)
    return torch.bincount(torch.as_tensor(list(mode), dtype=torch.long), minlength=n_levels).double()


def sample_levels(batch_size: int, n_levels: int, mode: str | Sequence[int] = "auto",
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-sample target levels, LongTensor (B,), drawn with :func:`level_weights` (CPU generator)."""
    return torch.multinomial(level_weights(n_levels, mode), batch_size, replacement=True, generator=generator)


def top_k_accuracy(logits: torch.Tensor, targets: torch.Tensor, k: int = TOP_K) -> torch.Tensor:
    """Fraction of rows whose target is among the k largest logits. logits (N, C), targets (N,) -> ()."""
    top = logits.topk(min(k, logits.shape[-1]), dim=-1).indices
    return (top == targets[:, None]).any(-1).float().mean()


@dataclass
class Packed:
    """A right-padded batch ready for the stack.

    ``embeds`` (B, S, D); ``position_ids`` (B, S) long; ``lengths`` (B,) long; ``targets`` (B, S)
    long, already shifted for the AR: the logit at (b, t) is scored against ``targets[b, t]``
    unless it is -100; ``levels`` (B,) long; ``heads`` the classifier name per sample;
    ``resp_start`` the index of each sample's first resp token.
    """

    embeds: torch.Tensor
    position_ids: torch.Tensor
    lengths: torch.Tensor
    targets: torch.Tensor
    levels: torch.Tensor
    heads: list[str]
    resp_start: list[int]


class Classifiers(nn.Module):
    """Split output heads, ``proj.{i}`` = Linear(D, sizes[i]); addressed by name."""

    def __init__(self, names: list[str], sizes: list[int], dim: int, bias: bool = True):
        super().__init__()
        self.names = list(names)
        self.index = {n: i for i, n in enumerate(self.names)}
        self.proj = nn.ModuleList(nn.Linear(dim, n, bias=bias) for n in sizes)

    def forward(self, x: torch.Tensor, name: str) -> torch.Tensor:
        """(..., D) -> (..., sizes[name])."""
        return self.proj[self.index[name]](x)


class ARNAR(nn.Module):
    """The v5 (and v6: one more head, ``raw_text``, ``classifiers.proj.{last}``) AR+NAR model; ``config`` is anything :func:`resolve_config` accepts (e.g. "tiny").

    Parameters and their state-dict names match the released ``ar+nar-llama-8`` (155 keys for
    "full"): ``sep``, ``dropout_token``, ``text_emb``, ``proms_emb.embeddings.{k}``,
    ``resps_emb.embeddings.{k}``, ``langs_emb``, ``tasks_emb``, ``tones_emb``, ``rvq_l_emb``,
    ``len_emb``, ``raw_text_emb``, ``model.layers.{i}...``, ``model.norm``, ``classifiers.proj.{i}``.
    Only the TTS path is implemented: ``tasks_emb``, ``tones_emb``, ``len_emb``, ``raw_text_emb``
    and ``dropout_token`` are held for checkpoint compatibility and get no gradient.
    """

    def __init__(self, config: str | Mapping[str, Any] = "full"):
        super().__init__()
        cfg = resolve_config(config)
        self.config = cfg
        d, n, a = cfg["dim"], cfg["resp_levels"], cfg["audio_tokens"]
        self.n_levels, self.audio_tokens, self.stop_token = n, a, a
        self.sep = nn.Parameter(torch.randn(d))
        self.dropout_token = nn.Parameter(torch.randn(d))
        self.text_emb = nn.Embedding(cfg["phoneme_tokens"], d)
        sums = cfg["audio_embedding_sums"]
        self.proms_emb = AudioEmbedding([a] * n, d, sums)
        # AR:0:0 (with stop), NAR:0:1 .. NAR:{n-2}:{n-1}, NAR:0:0 (with stop/mask)
        self.resps_emb = AudioEmbedding([a + 1] + [a] * (n - 1) + [a + 1], d, sums)
        self.langs_emb = nn.Embedding(cfg["langs"], d)
        self.tasks_emb = nn.Embedding(cfg["tasks"], d)
        self.tones_emb = nn.Embedding(cfg["tones"], d)
        self.rvq_l_emb = nn.Embedding(n, d)
        self.len_emb = nn.Embedding(cfg["len_tokens"], d)
        self.raw_text_emb = nn.Embedding(cfg["text_tokens"], d)
        self.model = LlamaModel(d, cfg["heads"], cfg["layers"], d * cfg["ffn_mult"], cfg["dropout"],
                                cfg["rms_norm_eps"], cfg["rope_theta"])
        names = ["AR:0:0", *[f"NAR:{i}:{i + 1}" for i in range(n - 1)], "NAR:0:0", "stt"]
        sizes = [a + 1, *[a] * (n - 1), a, cfg["phoneme_tokens"]]
        if "len" in cfg["capabilities"]:
            names.append("len")
            sizes.append(cfg["len_tokens"])
        if int(cfg.get("version", 5)) >= 6:  # version 6 adds a text output head (phonemes -> text), after the others
            names.append("raw_text")
            sizes.append(cfg["text_tokens"])
        self.classifiers = Classifiers(names, sizes, d, cfg["classifiers_bias"])
        #: the AR's targets: "sequence" (the sep before the resp predicts its first code) or "segment" (the shift
        #: inside the resp segment, as vall-e's per-segment loss under ``loss_factors``: the first code is no target)
        self.ar_loss = "sequence"
        self._init_stack()

    def _init_stack(self) -> None:
        """HF LLaMA's default init for the stack: Linear ~ N(0, 0.02)."""
        for m in self.model.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)

    # ----------------------------------------------------------------------------------- inputs
    def _sample_segments(self, phns: torch.Tensor, prom: torch.Tensor, lang: torch.Tensor | int, level: int,
                         resp_in: torch.Tensor) -> list[torch.Tensor]:
        """Segments (n_i, D) of one sample; ``resp_in`` (T, k) are the resp codes already cut to the input levels."""
        dev = self.sep.device
        lang = torch.as_tensor(lang, device=dev).long().reshape(1)
        k = max(level, 1)
        if prom.dim() != 2 or prom.shape[1] < k:
            raise ValueError(f"prompt codes must be (Tp, levels) with at least {k} levels for level {level}, got {tuple(prom.shape)}")
        return [
            self.text_emb(phns.to(dev).long()),
            self.langs_emb(lang),
            self.rvq_l_emb(torch.tensor([level], device=dev)),
            self.proms_emb(prom[:, :k].to(dev), offset=0),
            self.resps_emb(resp_in.to(dev), offset=0 if level == 0 else 1),
        ]

    def build_inputs(self, phns: Sequence[torch.Tensor], proms: Sequence[torch.Tensor], resps: Sequence[torch.Tensor],
                     langs: torch.Tensor | Sequence[int], levels: torch.Tensor | Sequence[int]) -> Packed:
        """Embed and pad a training batch for the given per-sample target levels (B,)."""
        levels = torch.as_tensor(levels, dtype=torch.long).reshape(-1)
        if not (len(phns) == len(proms) == len(resps) == len(levels)):
            raise ValueError(f"batch lists differ in length: {len(phns)} phns, {len(proms)} proms, {len(resps)} resps, {len(levels)} levels")
        langs = torch.as_tensor(langs, dtype=torch.long).reshape(-1)
        embeds, positions, targets, starts = [], [], [], []
        for b in range(len(phns)):
            level, codes = int(levels[b]), resps[b].to(self.sep.device).long()
            if codes.dim() != 2 or codes.shape[0] < 1 or codes.shape[1] <= level:
                raise ValueError(f"sample {b}: resps must be (T>=1, levels>{level}), got {tuple(codes.shape)}")
            if level == 0:
                seq = torch.cat([codes[:, 0], codes.new_tensor([self.stop_token])])
                resp_in = seq[:, None]
            else:
                seq, resp_in = codes[:, level], codes[:, :level]
            emb, pos, seg_starts = join_segments(self._sample_segments(phns[b], proms[b], langs[b], level, resp_in),
                                                 self.sep, self.config["unified_position_ids"])
            tgt = torch.full((emb.shape[0],), IGNORE_INDEX, dtype=torch.long, device=emb.device)
            r0 = seg_starts[-1]
            if level == 0 and self.ar_loss == "segment":  # shift inside the resp segment: resp[0] is no target
                tgt[r0: r0 + seq.shape[0] - 1] = seq[1:]
            elif level == 0:  # causal shift: position t predicts token t + 1
                tgt[r0 - 1: r0 - 1 + seq.shape[0]] = seq
            else:
                tgt[r0: r0 + seq.shape[0]] = seq
            embeds.append(emb)
            positions.append(pos)
            targets.append(tgt)
            starts.append(r0)
        emb, pos, lengths = pad_batch(embeds, positions)
        tgt = torch.nn.utils.rnn.pad_sequence(targets, batch_first=True, padding_value=IGNORE_INDEX)
        return Packed(emb, pos, lengths, tgt, levels, [head_name(int(lv)) for lv in levels], starts)

    # ----------------------------------------------------------------------------------- training
    def forward(self, phns: Sequence[torch.Tensor], proms: Sequence[torch.Tensor], resps: Sequence[torch.Tensor],
                langs: torch.Tensor | Sequence[int], levels: torch.Tensor | Sequence[int] | None = None,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Training loss of a batch (see module docstring for the format).

        ``levels`` (B,) forces the target levels; otherwise they are drawn with ``generator``.
        Returns ``{"loss", "nll", "acc"}``: per-sample mean cross entropy averaged over the batch
        (loss == nll), and top-10 accuracy of the scored tokens averaged over the batch (no grad).
        """
        if levels is None:
            levels = sample_levels(len(phns), self.n_levels, self.config["rvq_levels_p"], generator)
        packed = self.build_inputs(phns, proms, resps, langs, levels)
        hidden = self.model(packed.embeds, packed.position_ids, packed.lengths)
        return self.loss_from_hidden(hidden, packed)

    def loss_from_hidden(self, hidden: torch.Tensor, packed: Packed) -> dict[str, torch.Tensor]:
        """Score (B, S, D) hidden states against ``packed.targets`` with each sample's head."""
        nlls, accs = [], []
        for b, name in enumerate(packed.heads):
            keep = packed.targets[b] != IGNORE_INDEX
            logits = self.classifiers(hidden[b, keep], name).float()
            target = packed.targets[b, keep]
            nlls.append(F.cross_entropy(logits, target))
            with torch.no_grad():
                accs.append(top_k_accuracy(logits, target))
        nll = torch.stack(nlls).mean()
        return {"loss": nll, "nll": nll, "acc": torch.stack(accs).mean()}

    # ----------------------------------------------------------------------------------- inference
    def _logits(self, phns: torch.Tensor, prom: torch.Tensor, lang: torch.Tensor | int, level: int,
                resp_in: torch.Tensor, last_only: bool) -> torch.Tensor:
        """Logits of one sample: at the last position (C,) or at every resp position (T, C)."""
        emb, pos, starts = join_segments(self._sample_segments(phns, prom, lang, level, resp_in), self.sep,
                                         self.config["unified_position_ids"])
        hidden = self.model(emb[None], pos[None])[0]
        h = hidden[-1] if last_only else hidden[starts[-1]:]
        return self.classifiers(h, head_name(level)).float()

    @staticmethod
    def _pick(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
        """Greedy (temperature <= 0) or sampled ids from (..., C) logits -> (...)."""
        if temperature <= 0:
            return logits.argmax(-1)
        probs = torch.softmax(logits / temperature, dim=-1).reshape(-1, logits.shape[-1])
        return torch.multinomial(probs.cpu(), 1, generator=generator).reshape(logits.shape[:-1]).to(logits.device)

    def ar_codes(self, phns: torch.Tensor, prom: torch.Tensor, lang: torch.Tensor | int, max_steps: int,
                 choose: Callable[[torch.Tensor], int], use_cache: bool = True) -> torch.Tensor:
        """The AR's level-0 codes (T,) long: ``choose`` maps each step's logits (audio_tokens + 1,) to the next
        token, until the stop token or ``max_steps`` codes. No grad; the caller sets the mode.

        ``use_cache`` (the default) runs the prompt once into a :class:`KVCache` and then one token per step, at
        the resp segment's next position; ``use_cache=False`` re-runs the whole sequence every step (the
        reference the cache is tested against: same logits to float rounding, same codes).
        """
        dev = self.sep.device
        codes: list[int] = []
        empty = torch.zeros(0, 1, dtype=torch.long, device=dev)
        with torch.no_grad():
            if not use_cache:
                for _ in range(max_steps):
                    token = choose(self._logits(phns, prom, lang, 0, torch.tensor(codes, device=dev).view(-1, 1)
                                                if codes else empty, last_only=True))
                    if token == self.stop_token:
                        break
                    codes.append(token)
                return torch.tensor(codes, dtype=torch.long, device=dev)
            emb, pos, starts = join_segments(self._sample_segments(phns, prom, lang, 0, empty), self.sep,
                                             self.config["unified_position_ids"])
            cache = KVCache(len(self.model.layers))
            hidden = self.model(emb[None], pos[None], cache=cache)[0, -1]
            r0 = starts[-1]  # the resp segment starts after the prompt's sep; positions restart there (unless unified)
            first = 0 if self.config["unified_position_ids"] else r0
            for step in range(max_steps):
                token = choose(self.classifiers(hidden, head_name(0)).float())
                if token == self.stop_token:
                    break
                codes.append(token)
                if step == max_steps - 1:
                    break
                tok = self.resps_emb(torch.tensor([[token]], device=dev), offset=0)  # (1, D)
                position = torch.tensor([[len(cache) - first]], device=dev)
                hidden = self.model(tok[None], position, cache=cache)[0, -1]
        return torch.tensor(codes, dtype=torch.long, device=dev)

    @torch.no_grad()
    def generate(self, phns: torch.Tensor, prom: torch.Tensor, lang: torch.Tensor | int = 0, max_ar_steps: int = 500,
                 ar_temperature: float = 1.0, nar_temperature: float = 0.0,
                 generator: torch.Generator | None = None, use_cache: bool = True) -> torch.Tensor:
        """TTS for one sample: phns (Lp,), prom (Tp, n_levels) -> codes (T_out, n_levels) long.

        The AR samples level 0 until the stop token or ``max_ar_steps`` codes (so T_out <=
        max_ar_steps; T_out may be 0), then the NAR fills levels 1..n-1, one pass per level, fed
        the levels so far. Runs in eval mode (no attention dropout) and restores the mode after.
        The AR decodes with a KV cache (one token per step, see :meth:`ar_codes`); ``use_cache=False``
        re-runs the whole sequence every step, with the same result. The NAR passes need no cache.
        """
        was_training = self.training
        self.eval()
        try:
            codes = self.ar_codes(phns, prom, lang, max_ar_steps,
                                  lambda logits: int(self._pick(logits, ar_temperature, generator)), use_cache)
            out = codes[:, None]
            if out.shape[0] == 0:
                return out.new_zeros(0, self.n_levels)
            for level in range(1, self.n_levels):
                logits = self._logits(phns, prom, lang, level, out, last_only=False)
                out = torch.cat([out, self._pick(logits, nar_temperature, generator)[:, None]], dim=1)
            return out
        finally:
            self.train(was_training)
