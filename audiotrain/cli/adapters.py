"""``audiotrain export`` and ``audiotrain merge``: take a run's adapter out of the run directory.

Both read the adapter as data before using it (:func:`audiotrain.lora.adapter.load_peft`, the plugin's native
file, a full fine-tune's ``model.safetensors``): a run directory without adapters, a damaged or truncated file, or
an adapter of another model is one sentence and exit code 2, never a traceback. ``--trust-pickle`` is the
DANGEROUS opt-in ``trust_pickle=true`` (pickled ``.pth``/``.pt``/``.bin`` files unpickled fully, running any code
they carry) for files you made yourself.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

from audiotrain.atomic_write import atomic_dir, recover
from audiotrain.errors import UserError

TRUST_HELP = ("DANGEROUS: unpickle .pth/.pt/.bin weights fully, which runs any code they carry; only for files you "
              "made yourself (default: read them as data, torch.load(weights_only=True))")


class NoAdapterError(FileNotFoundError):
    pass


def _adapter_dir(source: Path, step: str) -> Path:
    """A run directory (→ adapters/<step>) or an adapter folder given directly. A folder a killed save left
    renamed aside is put back first (``atomic_write.recover``); temporary folders are never picked."""
    if not source.exists():
        raise NoAdapterError(f"{source} holds no adapter '{step}' (no such folder): give a run directory (with "
                             f"adapters/{step}/) or an adapter folder.")
    if not source.is_dir():
        raise NoAdapterError(f"{source} holds no adapter '{step}' (it is a file, not a folder): give a run directory "
                             f"(with adapters/{step}/) or an adapter folder.")
    recover(source / "adapters" / step)
    if (source / "adapters" / step).is_dir():
        return source / "adapters" / step
    if (source / "peft").is_dir() or (source / "adapter_config.json").is_file() or (source / "model.safetensors").is_file():
        return source
    saved = sorted(p.name for p in (source / "adapters").glob("*") if p.is_dir()) if (source / "adapters").is_dir() else []
    hint = f" (it has {', '.join(saved)}: pass --step {saved[-1]})" if saved else ""
    raise NoAdapterError(f"{source} holds no adapter '{step}'{hint}: give a run directory (with adapters/{step}/) "
                         f"or an adapter folder.")


def _peft_dir(src: Path) -> Path | None:
    if (src / "peft").is_dir():
        return src / "peft"
    return src if (src / "adapter_config.json").is_file() else None


def _run_config(run_dir: Path) -> Any | None:
    """The run's config.yaml (None when the folder has none: an adapter folder given directly)."""
    from omegaconf import OmegaConf

    from audiotrain.errors import UserError

    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    try:
        cfg = OmegaConf.load(path)
    except Exception as exc:  # yaml's and OmegaConf's own error types
        raise UserError(f"{path} is not a readable run config ({str(exc).splitlines()[0][:120]}): give the run "
                        f"directory that trained the adapter.") from None
    if not OmegaConf.select(cfg, "model.name", default=None):
        raise UserError(f"{path} names no model (model.name): give the run directory that trained the adapter.")
    return cfg


def check_adapter(src: Path, cfg: Any | None, trust_pickle: bool = False) -> list[Path]:
    """Read every weights file of an adapter folder as data (one sentence when one is bad); returns them."""
    from audiotrain.errors import UserError
    from audiotrain.lora import adapter as lora
    from audiotrain.safe_files import safetensors_metadata

    read: list[Path] = []
    peft = _peft_dir(src)
    if peft is not None:
        settings, _ = lora.load_peft(peft)
        if cfg is not None:
            problem = lora.base_problem(str(peft), lora.peft_base_model(peft), str(cfg.model.name),
                                        cfg.model.get("preset", ""))
            if problem:
                raise UserError(problem)
        read.append(peft / "adapter_model.safetensors")
    if (src / "model.safetensors").is_file():
        safetensors_metadata(src / "model.safetensors", expected="a full fine-tune's model.safetensors")
        read.append(src / "model.safetensors")
    if cfg is not None:
        from audiotrain.plugins import registry

        plugin = registry.get(str(cfg.model.name))
        fmt = plugin.native_adapter_format()
        native = src / plugin.name
        if fmt is not None and native.is_dir():
            for f in sorted(p for p in native.iterdir() if p.suffix in (".safetensors", ".sft", ".pth")):
                fmt.load(f, trust_pickle=trust_pickle)
                read.append(f)
    if not read:
        raise UserError(f"{src} holds no adapter weights (no peft/ folder, adapter_config.json or model.safetensors): "
                        f"give a run directory or an adapter folder.")
    return read


def export(argv: list[str]) -> int:
    from audiotrain.errors import UserError

    ap = argparse.ArgumentParser(prog="audiotrain export", description="Copy a run's adapter in every saved format.")
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--step", default="final", help="final (default) or step_N")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--trust-pickle", action="store_true", help=TRUST_HELP)
    args = ap.parse_args(argv)
    try:
        src = _adapter_dir(args.run_dir, args.step)
        check_adapter(src, _run_config(args.run_dir), args.trust_pickle)
    except (OSError, UserError) as exc:
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
    ap.add_argument("--trust-pickle", action="store_true", help=TRUST_HELP)
    args = ap.parse_args(argv)
    from omegaconf import OmegaConf

    from audiotrain.config import resolvers
    from audiotrain.lora import adapter as lora
    from audiotrain.plugins import registry

    resolvers.register()
    try:
        src = _adapter_dir(args.run_dir, args.step)
        cfg = _run_config(args.run_dir)
        if cfg is None:
            raise UserError(f"{args.run_dir / 'config.yaml'} is missing: give the run directory that trained the "
                            f"adapter.")
        check_adapter(src, cfg, args.trust_pickle)
        peft = _peft_dir(src)
        if peft is None:
            raise UserError(f"{src} is a full fine-tune (model.safetensors), not a LoRA: it needs no merge; use "
                            f"`audiotrain export` to copy it.")
        OmegaConf.set_struct(cfg, False)
        cfg.trust_pickle = bool(args.trust_pickle)  # never the run's own config.yaml: it may come from a stranger
        plugin = registry.get(cfg.model.name)
        backbone = plugin.build_backbone(cfg)
        settings, state = lora.load_peft(peft)
        root = backbone.adapter_root()
        lora.attach(root, settings)
        lora.load_adapter_state(root, state, str(peft), "give the adapter this run directory trained (its model "
                                                        "and model.preset)")
        lora.merge(root)
        with atomic_dir(args.out, fix="free some space or give --out on another disk", option="--out") as tmp:
            path = args.out / plugin.save_merged(backbone, cfg, tmp).relative_to(tmp)
    except (OSError, UserError) as exc:
        print(f"audiotrain merge: {exc}", file=sys.stderr)
        return 2
    print(f"Merged LoRA r={settings.r} alpha={settings.alpha:g} (scale {settings.scale:.4g}) into {cfg.model.name}; "
          f"wrote {path}")
    return 0
