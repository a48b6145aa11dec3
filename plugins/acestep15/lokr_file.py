"""LoKr weights as LyCORIS keys them: ACE-Step 1.5's ``lokr_weights.safetensors`` and the LoKr half of the
ComfyUI file (:mod:`.comfyui_file`).

PEFT names a LoKr factor ``<module>.lokr_w1`` (``lokr_w1_a``/``_b``, ``lokr_w2``, ``lokr_w2_a``/``_b``) and keeps
alpha in ``adapter_config.json``; its scale is alpha / r for every layer. LyCORIS uses the same factor names and
shapes under ``<prefix><module with "_" for ".">`` (``lycoris_layers_0_self_attn_q_proj.lokr_w1``), with a
per-module ``.alpha`` tensor, and scales by alpha / r only when a factor is low-rank; a layer whose two factors
are both full matrices plays at scale 1 whatever its alpha (LyCORIS sets alpha = r there, ComfyUI's LoKr
loader ignores alpha there). So for such a layer the file holds ``lokr_w1 × alpha/r`` and ``.alpha`` = r, and
the header's ``audiotrain_lokr`` entry says which layers carry that folded scale; reading divides it out again
(bit for bit when alpha/r is a power of two, as 2 = 128/64 is; within one unit in the last place otherwise).
"""
from __future__ import annotations

import json
from typing import Callable, Mapping

import torch

FACTORS = ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b")
FOLD_KEY = "audiotrain_lokr"


def split(key: str) -> tuple[str, str]:
    """``layers.0.self_attn.q_proj.lokr_w1`` → (``layers.0.self_attn.q_proj``, ``lokr_w1``)."""
    module, _, factor = key.rpartition(".")
    return module, factor


def by_module(state: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        module, factor = split(key)
        out.setdefault(module, {})[factor] = value
    return out


def full_both(factors: Mapping[str, torch.Tensor]) -> bool:
    """Both Kronecker factors are full matrices (LyCORIS then ignores alpha: scale 1)."""
    return "lokr_w1" in factors and "lokr_w2" in factors


def to_lycoris(state: Mapping[str, torch.Tensor], scale: float, r: int,
               name: Callable[[str], str]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """PEFT-keyed LoKr tensors (module names as the file's loader sees them) → (LyCORIS-keyed tensors with a
    ``.alpha`` per module, the header entry naming the folded layers). ``name`` maps a module to its key stem."""
    out: dict[str, torch.Tensor] = {}
    folded: list[str] = []
    for module, factors in by_module(state).items():
        stem = name(module)
        whole = full_both(factors)
        for factor, value in factors.items():
            out[f"{stem}.{factor}"] = (value * scale if whole and factor == "lokr_w1" else value).contiguous()
        out[f"{stem}.alpha"] = torch.tensor(float(r) if whole else float(scale * r))
        if whole:
            folded.append(stem)
    return out, {FOLD_KEY: json.dumps({"scale_folded_into_lokr_w1": scale, "modules": sorted(folded)})}


def from_lycoris(tensors: Mapping[str, torch.Tensor], header: Mapping[str, str],
                 module: Callable[[str], str | None], where: str, expected: str) -> dict[str, torch.Tensor]:
    """The inverse of :func:`to_lycoris`: PEFT-keyed tensors (``module(stem)`` gives the module name, None for a
    stem that is not one of the model's: an unexpected key). Strict: an unknown factor, or a layer without both
    factors or its ``.alpha``, is one sentence."""
    from audiotrain.safe_files import BadFileError

    try:
        info = json.loads(header.get(FOLD_KEY) or "{}")
        scale = float(info.get("scale_folded_into_lokr_w1", 1.0))
        folded = set(info.get("modules", []))
    except (TypeError, ValueError, AttributeError):
        raise BadFileError(f"{where} has an {FOLD_KEY} header entry that is not the JSON audiotrain writes; "
                           f"give {expected}.") from None
    out: dict[str, torch.Tensor] = {}
    stems: dict[str, dict[str, torch.Tensor]] = by_module(tensors)
    for stem, factors in stems.items():
        name = module(stem)
        unknown = sorted(set(factors) - set(FACTORS) - {"alpha"})
        if name is None or unknown:
            what = f"{stem}.{unknown[0]}" if unknown else f"{stem}.{next(iter(factors))}"
            raise BadFileError(f"{where} has the unexpected key {what}, which is no LoKr factor of this model's "
                               f"adapted layers; give {expected}.")
        has1 = "lokr_w1" in factors or {"lokr_w1_a", "lokr_w1_b"} <= set(factors)
        has2 = "lokr_w2" in factors or {"lokr_w2_a", "lokr_w2_b"} <= set(factors)
        if not (has1 and has2 and "alpha" in factors):
            lacks = "lokr_w1" if not has1 else "lokr_w2" if not has2 else "alpha"
            raise BadFileError(f"{where} lacks {stem}.{lacks} (each adapted layer needs both Kronecker factors and "
                               f"its alpha); give {expected}.")
        whole = full_both(factors)
        if whole != (stem in folded):
            raise BadFileError(f"{where}: the {FOLD_KEY} header entry does not match {stem}'s factors; give "
                               f"{expected}.")
        for factor, value in factors.items():
            if factor != "alpha":
                out[f"{name}.{factor}"] = value / scale if whole and factor == "lokr_w1" else value
    return out
