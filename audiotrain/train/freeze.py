"""``model.freeze``: stop training the parameters whose names match a pattern.

Patterns are matched against module and parameter names of the adapter root (the names LoRA targets use): a
glob (``transformer_blocks.0.*``, ``*lyric*``; ``*`` crosses dots) or PEFT's suffix rule (``lyric_encoder``,
``to_q``, ``norm1.weight``). A module that matches freezes every parameter under it. Applied after the LoRA
adapter is attached, so ``*lora_*`` (``*lokr_*`` with ``lora=lokr``) patterns freeze adapter weights; in a full
fine-tune they freeze base weights.
"""
from __future__ import annotations

import difflib
from typing import Iterable, Sequence

from torch import nn

from audiotrain.errors import UserError
from audiotrain.lora.adapter import matches, target_suffix
from audiotrain.train.param_groups import name_matches


class FreezeError(UserError):
    """A ``model.freeze`` pattern that matches nothing."""


def names_of(root: nn.Module) -> list[str]:
    """Every module and parameter name of ``root`` (what a pattern can name)."""
    return [n for n, _ in root.named_modules() if n] + [n for n, _ in root.named_parameters()]


#: the adapter weights PEFT may add to a targeted module, per ``lora.algo`` (LoKr's factors: a factor is one matrix
#: or, when low-rank, its ``_a`` / ``_b`` pair)
ADAPTER_PARTS = {"lora": ("lora_A", "lora_B"),
                 "lokr": ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b")}


def lora_names(module_names: Iterable[str], targets: Sequence[str], algo: str = "lora") -> list[str]:
    """The names PEFT gives the adapter's layers on the targeted modules (``<m>.lora_A.default.weight``,
    ``<m>.lokr_w1.default`` ...), so a pattern on adapter weights is checked before the adapter exists."""
    out = []
    for m in module_names:
        if any(matches(m, t) for t in targets):
            for part in ADAPTER_PARTS.get(algo, ADAPTER_PARTS["lora"]):
                out += [f"{m}.{part}", f"{m}.{part}.default", f"{m}.{part}.default.weight"]
    return out


def unmatched(patterns: Sequence[str], names: Sequence[str]) -> list[str]:
    return [p for p in patterns if not any(name_matches(n, p) for n in names)]


def unknown_message(missing: Sequence[str], names: Sequence[str]) -> str:
    leaves = sorted({target_suffix(n) for n in names if n and not n.endswith((".weight", ".bias"))})
    tops = sorted({n.split(".")[0] for n in names if n})

    def named(p: str) -> str:
        guess = difflib.get_close_matches(p.strip("*."), sorted(set(leaves) | set(tops)), n=3, cutoff=0.5)
        return f"{p!r} (close names: {', '.join(guess)})" if guess else repr(p)

    return (f"model.freeze has {', '.join(named(p) for p in missing)}, which match{'es' if len(missing) == 1 else ''} "
            f"no module or parameter of this model; use a module name or suffix (e.g. {', '.join(tops[:8])}) "
            f"or a glob like '{tops[0] if tops else 'block'}.*'.")


def check(patterns: Sequence[str], names: Sequence[str]) -> str | None:
    """One sentence when a pattern matches no name, else None."""
    missing = unmatched(patterns, names)
    return unknown_message(missing, names) if missing else None


def apply(root: nn.Module, patterns: Sequence[str]) -> int:
    """Freeze the matching parameters of ``root``; returns how many elements were trainable and now are not.
    Raises :class:`FreezeError` (one sentence) for a pattern that matches nothing."""
    patterns = [str(p) for p in patterns]
    if not patterns:
        return 0
    problem = check(patterns, names_of(root))
    if problem:
        raise FreezeError(problem)
    frozen = 0
    for name, p in root.named_parameters():
        if any(name_matches(name, pat) for pat in patterns):
            if p.requires_grad:
                frozen += p.numel()
            p.requires_grad_(False)
    return frozen
