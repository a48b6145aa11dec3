"""``audiotrain generate SOURCE``: audio from a trained run, an adapter or merged weights, for every plugin.

One interface: ``SOURCE [--out DIR] [--seed N] [--lora-scale X] [--prompts FILE] [--step final]`` plus the
plugin's own inputs (its ``Plugin.generate_options``; ``audiotrain generate SOURCE --help`` lists them). Each
prompt is rendered by ``Plugin.generate(model, cfg, request, seed)`` and written as ``<out>/<i>_<slug>.wav`` +
``.png`` (log-mel spectrogram) + ``.json`` (the request, seed, source and scale). The same seed gives the same
wav, byte for byte. ``--prompts`` reads several prompts in one call: a text file (one prompt a line, filling the
plugin's ``generate_text_field``) or a ``.jsonl`` file (one object a line, keys = the plugin's option names, plus
``seed``); the command-line values are every prompt's defaults. A bad SOURCE, missing weights or a bad input
(e.g. a reference clip) is one sentence and exit code 2.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from audiotrain.errors import UserError

PROG = "audiotrain generate"


def _common_parser(add_help: bool) -> argparse.ArgumentParser:
    from audiotrain.cli.adapters import TRUST_HELP

    ap = argparse.ArgumentParser(prog=PROG, add_help=add_help,
                                 description="Generate audio from a run directory, an adapter folder or merged weights.",
                                 epilog="`audiotrain generate SOURCE --help` lists the inputs SOURCE's model takes.")
    ap.add_argument("source", type=Path, nargs="?", metavar="SOURCE",
                    help="a run directory (config.yaml + adapters/), an adapter folder or merged weights")
    ap.add_argument("--out", type=Path, default=Path("generated"), help="output folder (default: ./generated)")
    ap.add_argument("--seed", type=int, default=0, help="random seed: the same seed gives the same audio (default 0)")
    ap.add_argument("--lora-scale", type=float, default=1.0,
                    help="scale of the adapter: 1 as trained (default), 0 the base model, in between a blend")
    ap.add_argument("--prompts", type=Path, default=None,
                    help="several prompts: a text file (one a line) or .jsonl (one object of options a line)")
    ap.add_argument("--step", default="final", help="which of a run directory's adapters: final (default) or step_N")
    ap.add_argument("--trust-pickle", action="store_true", help=TRUST_HELP)
    return ap


def slug(text: Any, limit: int = 40) -> str:
    s = re.sub(r"[^\w]+", "_", str(text or "").lower(), flags=re.UNICODE).strip("_")
    return s[:limit].rstrip("_") or "audio"


def read_prompts(path: Path, text_field: str, options: set[str]) -> list[dict[str, Any]]:
    """``--prompts FILE`` → one dict of option values per prompt (one sentence for an unreadable file or line)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"--prompts {path} cannot be read ({type(exc).__name__}): give a UTF-8 text or .jsonl file.") from None
    prompts: list[dict[str, Any]] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if path.suffix.lower() != ".jsonl":
            prompts.append({text_field: line.strip()})
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise UserError(f"--prompts {path} line {n} is not JSON ({exc.msg}): write one object a line, e.g. "
                            f'{{"{text_field}": "..."}}.') from None
        if not isinstance(row, dict):
            raise UserError(f"--prompts {path} line {n} is a {type(row).__name__}, not an object: write one object "
                            f'a line, e.g. {{"{text_field}": "..."}}.')
        unknown = sorted(set(row) - options - {"seed"})
        if unknown:
            raise UserError(f"--prompts {path} line {n} has the unknown key '{unknown[0]}': use "
                            f"{', '.join(sorted(options | {'seed'}))}.")
        prompts.append(row)
    if not prompts:
        raise UserError(f"--prompts {path} holds no prompts: write one a line.")
    return prompts


def _step_bar(desc: str):
    """``update(done, total)`` for a plugin's steps, drawn as a tqdm bar on stderr; ``close()`` when done."""
    from tqdm.auto import tqdm

    bar = tqdm(desc=desc, unit="step", dynamic_ncols=True, file=sys.stderr, leave=False)

    def update(done: int, total: int) -> None:
        bar.total = int(total)
        bar.n = int(done)
        bar.refresh()

    update.close = bar.close  # type: ignore[attr-defined]
    return update


def _parse(argv: list[str]):
    """Find SOURCE first (its plugin adds its options), then parse everything."""
    from audiotrain.cli.generate_source import find_source

    known, _ = _common_parser(add_help=False).parse_known_args(argv)
    wants_help = any(a in ("-h", "--help") for a in argv)
    if known.source is None:
        ap = _common_parser(add_help=True)
        if wants_help:
            ap.print_help()
            raise SystemExit(0)
        raise UserError("SOURCE is missing: give a run directory, an adapter folder or merged weights "
                        "(`audiotrain generate --help`).")
    source = find_source(known.source, known.step)
    plugin = source.plugin
    if type(plugin).generate is _base_generate() or type(plugin).generate_options is _base_options():
        raise UserError(f"The {plugin.name} plugin cannot generate audio (its Plugin has no generate_options/"
                        f"generate hooks): use a plugin that has them, or add them to {type(plugin).__name__}.")
    ap = _common_parser(add_help=True)
    before = {a.dest for a in ap._actions}
    plugin.generate_options(ap.add_argument_group(f"{plugin.name} inputs"))
    own = [a for a in ap._actions if a.dest not in before]
    args = ap.parse_args(argv)
    return args, source, {a.dest: getattr(args, a.dest) for a in own}


def _base_generate():
    from audiotrain.plugins.base import Plugin

    return Plugin.generate


def _base_options():
    from audiotrain.plugins.base import Plugin

    return Plugin.generate_options


def run_generate(argv: list[str]) -> list[Path]:
    """Parse, load and render every prompt; returns the files written (raises UserError for what a user fixes)."""
    import numpy as np
    import torch

    from audiotrain.cli.generate_source import load_model
    from audiotrain.tracking.samples import track_stem, tracks, write_sample
    from audiotrain.train.console import console

    from audiotrain.train.console import quiet_libraries

    quiet_libraries()
    args, source, defaults = _parse(argv)
    plugin, cfg = source.plugin, source.cfg
    text_field = plugin.generate_text_field
    prompts = read_prompts(args.prompts, text_field, set(defaults)) if args.prompts else [{}]
    requests = [{**defaults, **p} for p in prompts]
    for request in requests:  # every input checked before any model is built
        plugin.generate_check(cfg, request)
    console.print(f"Generating {len(requests)} prompt(s) with {source.describe} (LoRA scale {args.lora_scale:g}).")
    model = load_model(source, args.lora_scale, args.trust_pickle)
    args.out.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    for i, request in enumerate(requests):
        seed = int(request.pop("seed", args.seed))
        name = f"{i}_{slug(request.get(text_field))}"
        torch.manual_seed(seed)
        progress = _step_bar(f"{i + 1}/{len(requests)} {name}")
        try:
            with torch.no_grad():
                audio, sr = plugin.generate(model, cfg, request, seed, progress=progress)
        finally:
            progress.close()
        stem = args.out / name
        rendered = {}
        for track, a in tracks(audio).items():  # the main track, then any others (a song's stems) beside it
            w = a.detach().float().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a, np.float32)
            rendered[track] = w[None] if w.ndim == 1 else w
            files += write_sample(rendered[track], int(sr), track_stem(stem, track),
                                  title=f"{name}{f' ({track})' if track else ''} (seed {seed}, LoRA scale "
                                        f"{args.lora_scale:g})")
        wav = rendered[""]
        meta = {"source": str(source.path), "adapter": str(source.adapter) if source.adapter else None,
                "model": str(cfg.model.name), "preset": str(cfg.model.get("preset")), "seed": seed,
                "lora_scale": args.lora_scale, "sample_rate": int(sr), "channels": int(wav.shape[0]),
                "seconds": wav.shape[-1] / int(sr), "request": request,
                "tracks": [track_stem(stem, t).name + ".wav" for t in rendered]}
        stem.with_suffix(".json").write_text(json.dumps(meta, indent=2, ensure_ascii=False, default=str),
                                             encoding="utf-8")
        files.append(stem.with_suffix(".json"))
        console.print(f"  {stem.with_suffix('.wav')} ({meta['seconds']:.2f} s, {int(sr)} Hz, {wav.shape[0]} channel(s))")
    return files


def generate(argv: list[str]) -> int:
    from audiotrain.safe_files import BadFileError

    try:
        files = run_generate(argv)
    except (UserError, BadFileError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"{PROG}: {exc.filename or exc} does not exist: give an existing file.", file=sys.stderr)
        return 2
    print(f"Wrote {len([f for f in files if f.suffix == '.wav'])} wav file(s) (+ spectrogram png, settings json) "
          f"to {files[0].parent if files else '.'}")
    return 0
