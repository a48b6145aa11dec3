"""What a run trains: ``model.init_from`` weights, ``model.freeze`` patterns, and the per-group counts.

run.py calls :func:`apply_training_plan` once, right after the LoRA adapter is attached (or every weight of a full
fine-tune is made trainable), and logs :attr:`TrainingPlan.params` to MLflow.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import OmegaConf
from torch import nn

from audiotrain.lora.adapter import LoRASettings
from audiotrain.train import freeze, init_from
from audiotrain.train.param_groups import counts


@dataclass
class TrainingPlan:
    """``groups``: group name -> (trainable, frozen) element counts; ``init_from``: the weights read (or None)."""

    groups: dict[str, tuple[int, int]] = field(default_factory=dict)
    init_from: str | None = None
    loaded: int = 0
    frozen_by_patterns: int = 0

    @property
    def trainable(self) -> int:
        return sum(t for t, _ in self.groups.values())

    @property
    def frozen(self) -> int:
        return sum(f for _, f in self.groups.values())

    @property
    def params(self) -> dict[str, Any]:
        """MLflow params: ``params.trainable.<group>`` / ``params.frozen.<group>`` and the totals."""
        out: dict[str, Any] = {"params.trainable": self.trainable, "params.frozen": self.frozen}
        for name, (t, f) in self.groups.items():
            out[f"params.trainable.{name}"] = t
            out[f"params.frozen.{name}"] = f
        if self.init_from:
            out["params.init_from"] = self.init_from
        return out

    def table(self) -> str:
        """The compact console table: one row per group, then the totals."""
        width = max([len("group"), *(len(n) for n in self.groups)])
        rows = [f"  {'group':<{width}}  {'trainable':>13}  {'frozen':>13}"]
        rows += [f"  {n:<{width}}  {t:>13,}  {f:>13,}" for n, (t, f) in self.groups.items()]
        rows.append(f"  {'total':<{width}}  {self.trainable:>13,}  {self.frozen:>13,}")
        return "\n".join(rows)


def freeze_patterns(cfg: Any) -> list[str]:
    value = OmegaConf.select(cfg, "model.freeze", default=None)
    if value is None:
        return []
    return [str(p) for p in (value if not isinstance(value, str) else [value])]


def apply_training_plan(backbone: nn.Module, cfg: Any, settings: LoRASettings | None, console: Any = None) -> TrainingPlan:
    """Load ``model.init_from`` (strict; one sentence when it does not fit), freeze ``model.freeze`` (one
    sentence for a pattern that matches nothing), count trainable/frozen parameters per optimizer group and
    print the table when ``console`` is given."""
    plan = TrainingPlan()
    value = OmegaConf.select(cfg, "model.init_from", default=None)
    if value:
        src, plan.loaded = init_from.load(value, backbone, settings,
                                           trust_pickle=bool(OmegaConf.select(cfg, "trust_pickle", default=False)),
                                           model=(str(OmegaConf.select(cfg, "model.name", default="")),
                                                  OmegaConf.select(cfg, "model.preset", default="")))
        plan.init_from = str(src.path)
    root = backbone.adapter_root() if hasattr(backbone, "adapter_root") else backbone
    own = list(backbone.frozen_patterns()) if hasattr(backbone, "frozen_patterns") else []
    plan.frozen_by_patterns = freeze.apply(root, [*own, *freeze_patterns(cfg)])
    plan.groups = counts(backbone, cfg.optimizer)
    if console is not None:
        if plan.init_from:
            console.print(f"Initialised from {plan.init_from} ({plan.loaded} tensors; a new run from step 0).")
        if plan.frozen_by_patterns:
            console.print(f"model.freeze froze {plan.frozen_by_patterns:,} parameters.")
        console.print(plan.table(), markup=False, highlight=False)
    return plan
