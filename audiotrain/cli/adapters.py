"""``audiotrain export`` and ``audiotrain merge``: take a run's adapter out of the run directory."""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from audiotrain.atomic_write import atomic_dir, recover
from audiotrain.errors import UserError


def _adapter_dir(source: Path, step: str) -> Path:
    """A run directory (→ adapters/<step>) or an adapter folder given directly. A folder a killed save left
    renamed aside is put back first (``atomic_write.recover``); temporary folders are never picked."""
    recover(source / "adapters" / step)
    if (source / "adapters" / step).is_dir():
        return source / "adapters" / step
    if (source / "peft").is_dir() or (source / "adapter_config.json").is_file():
        return source
    raise FileNotFoundError(f"{source} holds no adapter '{step}': give a run directory (with adapters/{step}/) "
                            f"or an adapter folder.")


def export(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="audiotrain export", description="Copy a run's adapter in every saved format.")
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--step", default="final", help="final (default) or step_N")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    try:
        src = _adapter_dir(args.run_dir, args.step)
    except FileNotFoundError as exc:
        print(f"audiotrain export: {exc}", file=sys.stderr)
        return 2
    out = args.out or Path(f"export_{args.run_dir.name}_{args.step}")
    try:  # the copy appears complete or not at all; an earlier export of that name is replaced, never mixed in
        with atomic_dir(out, fix="free some space or give --out on another disk", option="--out") as tmp:
            shutil.copytree(src, tmp, dirs_exist_ok=True)
    except UserError as exc:
        print(f"audiotrain export: {exc}", file=sys.stderr)
        return 2
    for p in sorted(out.rglob("*")):
        if p.is_file():
            print(f"  {p}")
    print(f"Exported the '{args.step}' adapter of {args.run_dir} to {out}")
    return 0


def merge(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="audiotrain merge",
                                 description="Merge a run's LoRA into its base model and save the merged weights.")
    ap.add_argument("run_dir", type=Path, help="a run directory (its config.yaml names the base model)")
    ap.add_argument("--step", default="final")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    from omegaconf import OmegaConf

    from audiotrain.config import resolvers
    from audiotrain.lora import adapter as lora
    from audiotrain.plugins import registry

    resolvers.register()
    cfg_path = args.run_dir / "config.yaml"
    if not cfg_path.is_file():
        print(f"audiotrain merge: {cfg_path} is missing: give the run directory that trained the adapter.", file=sys.stderr)
        return 2
    try:
        src = _adapter_dir(args.run_dir, args.step)
        cfg = OmegaConf.load(cfg_path)
        plugin = registry.get(cfg.model.name)
        backbone = plugin.build_backbone(cfg)
        settings, state = lora.load_peft(src / "peft")
        root = backbone.adapter_root()
        lora.attach(root, settings)
        lora.load_adapter_state(root, state)
        lora.merge(root)
        with atomic_dir(args.out, fix="free some space or give --out on another disk", option="--out") as tmp:
            path = args.out / plugin.save_merged(backbone, cfg, tmp).relative_to(tmp)
    except (FileNotFoundError, UserError) as exc:
        print(f"audiotrain merge: {exc}", file=sys.stderr)
        return 2
    print(f"Merged LoRA r={settings.r} alpha={settings.alpha:g} (scale {settings.scale:.4g}) into {cfg.model.name}; "
          f"wrote {path}")
    return 0
