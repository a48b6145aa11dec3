"""Parameter groups: which parameters share an lr multiplier and a weight decay.

A backbone declares its groups (:meth:`Backbone.parameter_groups`); ``optimizer.groups`` in the config adjusts
them (``optimizer.groups.<name>.lr_mult=0.1``, ``.weight_decay=0``), names the built-in ``no_decay`` rule, or
defines new ones by name pattern (``optimizer.groups.text.match=[text_embedding*]``). Every parameter lands in
exactly one group: the first that matches, in the order config-defined groups, the backbone's groups, then
``default`` (lr multiplier 1, ``optimizer.weight_decay``), which takes the rest. With no group declared there is
one group of all trainable parameters, in ``parameters()`` order: exactly the single AdamW group of before.

Parameter names are those of the adapter root (the original project's names, as LoRA targets and
``model.freeze`` use them); parameters outside it keep their backbone name.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping, Sequence, Union

from torch import nn

from audiotrain.errors import UserError

DEFAULT = "default"
#: a rule: (parameter name, parameter, the module that owns it) -> True when the parameter belongs to the group
Rule = Callable[[str, nn.Parameter, nn.Module], bool]
GROUP_KEYS = ("lr_mult", "weight_decay", "match")


class ParamGroupError(UserError):
    """An ``optimizer.groups`` entry a user can fix."""


@dataclass(frozen=True)
class ParamGroup:
    """``match``: a rule, or name patterns (glob like ``*.norm*``, else PEFT's suffix rule). ``weight_decay``
    None = ``optimizer.weight_decay``."""

    name: str
    match: Union[Rule, Sequence[str]]
    lr_mult: float = 1.0
    weight_decay: float | None = None

    def matches(self, name: str, param: nn.Parameter, owner: nn.Module) -> bool:
        if callable(self.match):
            return bool(self.match(name, param, owner))
        return any(name_matches(name, pattern) for pattern in self.match)


def is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def name_matches(name: str, pattern: str) -> bool:
    """A parameter (or module) name matches when it, or one of the modules holding it, matches the pattern: a
    glob (fnmatch, ``*`` crosses dots) or PEFT's suffix rule (the name equals it or ends with ``.pattern``)."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        prefix = ".".join(parts[:i])
        if is_glob(pattern):
            if fnmatch.fnmatchcase(prefix, pattern):
                return True
        elif prefix == pattern or prefix.endswith("." + pattern):
            return True
    return False


def _is_norm(module: nn.Module) -> bool:
    norms = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase, nn.LocalResponseNorm)
    return isinstance(module, norms) or "norm" in type(module).__name__.lower()  # plugins' own RMSNorm & co.


def no_decay_rule(name: str, param: nn.Parameter, owner: nn.Module) -> bool:
    """Biases, every parameter of a normalisation layer and every embedding table (TorToiSe's second group)."""
    return name.rsplit(".", 1)[-1] == "bias" or _is_norm(owner) or isinstance(owner, nn.Embedding)


def no_decay_group(lr_mult: float = 1.0) -> ParamGroup:
    """The standard rule, for a backbone that wants it (and by name from the config: ``optimizer.groups.no_decay``)."""
    return ParamGroup("no_decay", no_decay_rule, lr_mult=lr_mult, weight_decay=0.0)


BUILT_IN = {"no_decay": no_decay_group()}


def named_parameters(backbone: nn.Module) -> list[tuple[str, nn.Parameter, nn.Module]]:
    """(name, parameter, owning module) of every backbone parameter, in ``parameters()`` order, named as in the
    adapter root when it lies there."""
    root = backbone.adapter_root() if hasattr(backbone, "adapter_root") else backbone
    root_names = {id(p): n for n, p in root.named_parameters()}
    owners: dict[int, nn.Module] = {}
    for mod in backbone.modules():
        for p in mod.parameters(recurse=False):
            owners.setdefault(id(p), mod)
    return [(root_names.get(id(p), n), p, owners[id(p)]) for n, p in backbone.named_parameters()]


def resolve_groups(declared: Sequence[ParamGroup], overrides: Mapping[str, Any] | None) -> list[ParamGroup]:
    """The backbone's groups adjusted by ``optimizer.groups``, config-defined ones first, ``default`` last."""
    overrides = dict(overrides or {})
    by_name = {g.name: g for g in declared}
    out_first: list[ParamGroup] = []
    adjusted: dict[str, ParamGroup] = {}
    default = ParamGroup(DEFAULT, lambda *_: True)
    for name, entry in overrides.items():
        entry = dict(entry or {})
        kw = {k: entry[k] for k in ("lr_mult", "weight_decay") if k in entry}
        if "lr_mult" in kw:
            kw["lr_mult"] = float(kw["lr_mult"])
        if kw.get("weight_decay") is not None:
            kw["weight_decay"] = float(kw["weight_decay"])
        if entry.get("match"):
            if name == DEFAULT or name in by_name:
                raise ParamGroupError(f"optimizer.groups.{name}.match redefines the group {name!r}; give a new group "
                                      f"name for a pattern-defined group, or drop match to adjust {name!r}.")
            out_first.append(ParamGroup(name, [str(m) for m in entry["match"]], **kw))
        elif name == DEFAULT:
            default = replace(default, **kw)
        elif name in by_name:
            adjusted[name] = replace(by_name[name], **kw)
        elif name in BUILT_IN:
            out_first.append(replace(BUILT_IN[name], **kw))
        else:
            known = [DEFAULT, *by_name, *(n for n in BUILT_IN if n not in by_name)]
            raise ParamGroupError(f"optimizer.groups.{name} names no parameter group of this model: adjust one of "
                                  f"{', '.join(known)}, or define a new one with optimizer.groups.{name}.match=[PATTERN].")
    return [*out_first, *(adjusted.get(g.name, g) for g in declared), default]


def assign(backbone: nn.Module, groups: Sequence[ParamGroup]) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """Group name -> its (name, parameter) pairs, every parameter (trainable or not) in exactly one group (the
    first that matches); groups in ``groups`` order, parameters in ``parameters()`` order."""
    out: dict[str, list[tuple[str, nn.Parameter]]] = {g.name: [] for g in groups}
    for name, p, owner in named_parameters(backbone):
        for g in groups:
            if g.matches(name, p, owner):
                out[g.name].append((name, p))
                break
    return out


def groups_of(backbone: nn.Module, optimizer_cfg: Any) -> list[ParamGroup]:
    declared = backbone.parameter_groups() if hasattr(backbone, "parameter_groups") else []
    return resolve_groups(declared, optimizer_cfg.get("groups") if optimizer_cfg is not None else None)


def torch_param_groups(backbone: nn.Module, optimizer_cfg: Any) -> list[dict[str, Any]]:
    """The optimizer's param groups: trainable parameters only, empty groups left out. Each carries ``name``,
    ``lr_mult``, its ``lr`` (base lr x lr_mult) and ``weight_decay``; the schedule scales each group's own lr
    and ``lr X`` keeps the multipliers."""
    base_lr = float(optimizer_cfg.lr)
    base_wd = float(optimizer_cfg.weight_decay)
    groups = groups_of(backbone, optimizer_cfg)
    assigned = assign(backbone, groups)
    out = []
    for g in groups:
        params = [p for _, p in assigned[g.name] if p.requires_grad]
        if params:
            out.append({"params": params, "name": g.name, "lr_mult": float(g.lr_mult), "lr": base_lr * g.lr_mult,
                        "weight_decay": base_wd if g.weight_decay is None else float(g.weight_decay)})
    return out


def counts(backbone: nn.Module, optimizer_cfg: Any) -> dict[str, tuple[int, int]]:
    """Group name -> (trainable, frozen) parameter element counts, every group listed."""
    assigned = assign(backbone, groups_of(backbone, optimizer_cfg))
    return {name: (sum(p.numel() for _, p in pairs if p.requires_grad),
                   sum(p.numel() for _, p in pairs if not p.requires_grad)) for name, pairs in assigned.items()}

