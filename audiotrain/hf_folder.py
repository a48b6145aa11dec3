"""Hugging Face model folders (``save_pretrained`` layout) read as data, from local disk only.

- Nothing is downloaded (``local_files_only=True``) and no code from the folder runs (``trust_remote_code=False``;
  a plugin that allows remote code does so through its own documented opt-in).
- Every weights file is checked before transformers opens it: a safetensors file's header (a truncated or damaged
  copy is one sentence), a pickled ``pytorch_model.bin`` read by :func:`audiotrain.safe_files.load_torch`
  (``weights_only=True``; a file that needs full unpickling is refused unless ``trust_pickle=true``).
- A path that is missing, a file where a folder is wanted, a folder without ``config.json`` or weights, or weights
  that transformers cannot fit into the model its config describes: one sentence naming ``option=path``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from audiotrain.safe_files import BadFileError, load_torch, read_json, safetensors_metadata, where, first_line

class MissingFile(BadFileError, FileNotFoundError):
    """A weights/config file that is not there: one sentence (a UserError), and a FileNotFoundError too."""


SAFETENSORS = ("model.safetensors", "model.safetensors.index.json")
PICKLES = ("pytorch_model.bin", "pytorch_model.bin.index.json")


def check_folder(path: Any, *, option: str | None, expected: str,
                 weights: Sequence[str] = SAFETENSORS + PICKLES, need: Sequence[str] = ("config.json",)) -> Path:
    """``path`` as a Path when it is a folder with every file of ``need`` and one of ``weights``, else one sentence."""
    folder = Path(str(path)).expanduser()
    shown = where(option, folder)
    if not folder.exists():
        raise BadFileError(f"{shown}: no such folder; pass {expected}.")
    if not folder.is_dir():
        raise BadFileError(f"{shown} is a file, not a folder; pass {expected}.")
    lacks = [n for n in need if not (folder / n).is_file()]
    if not any((folder / w).is_file() for w in weights):
        lacks.append(" or ".join(w for w in weights if not w.endswith(".index.json")))
    if lacks:
        raise BadFileError(f"{shown} lacks {', '.join(lacks)}; pass {expected}.")
    return folder


def _shards(folder: Path, index_name: str, option: str | None, expected: str) -> list[Path]:
    index = read_json(folder / index_name, option=option, expected=expected)
    files = sorted(set((index.get("weight_map") or {}).values())) if isinstance(index, Mapping) else []
    if not files:
        raise BadFileError(f"{where(option, folder / index_name)} names no weight files; pass {expected}.")
    return [folder / f for f in files]


def read_weights(folder: Path, *, option: str | None, expected: str,
                 trust_pickle: bool = False) -> dict[str, Any] | None:
    """Check the folder's weights as data. Returns None when they are safetensors (headers checked; transformers
    reads them itself), else the state dict of its ``pytorch_model.bin`` (shards merged), read with
    ``torch.load(weights_only=True)`` unless ``trust_pickle``."""
    if (folder / "model.safetensors").is_file() or (folder / "model.safetensors.index.json").is_file():
        files = ([folder / "model.safetensors"] if (folder / "model.safetensors").is_file()
                 else _shards(folder, "model.safetensors.index.json", option, expected))
        for f in files:
            safetensors_metadata(f, option=option, expected=expected)
        return None
    files = ([folder / "pytorch_model.bin"] if (folder / "pytorch_model.bin").is_file()
             else _shards(folder, "pytorch_model.bin.index.json", option, expected))
    state: dict[str, Any] = {}
    for f in files:
        part = load_torch(f, option=option, expected=expected, trust_pickle=trust_pickle)
        if not isinstance(part, Mapping) or not part:
            raise BadFileError(f"{where(option, f)} holds a {type(part).__name__}, not a state dict of weights; "
                               f"pass {expected}.")
        state.update({str(k): v for k, v in part.items()})
    return state


def load_model(cls: Any, path: Any, *, option: str | None, expected: str, trust_pickle: bool = False,
               **kwargs: Any) -> Any:
    """``cls.from_pretrained`` on a local folder, read as data (see the module doc); ``kwargs`` go to it."""
    folder = check_folder(path, option=option, expected=expected)
    shown = where(option, folder)
    config = read_json(folder / "config.json", option=option, expected=expected)
    want = getattr(cls.config_class, "model_type", "")
    got = config.get("model_type") if isinstance(config, Mapping) else None
    if want and got != want:
        raise BadFileError(f"{shown} holds a {got or 'untyped'} model (config.json model_type), not {want}; "
                           f"pass {expected}.")
    state = read_weights(folder, option=option, expected=expected, trust_pickle=trust_pickle)
    try:
        if state is None:
            model, info = cls.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False,
                                              use_safetensors=True, output_loading_info=True, **kwargs)
        else:
            conf = cls.config_class.from_pretrained(str(folder), local_files_only=True)
            model, info = cls.from_pretrained(None, config=conf, state_dict=state, output_loading_info=True, **kwargs)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, AttributeError) as exc:
        raise BadFileError(f"{shown} could not be loaded as {cls.__name__} ({first_line(exc)}); "
                           f"pass {expected}.") from None
    missing = sorted(info.get("missing_keys") or [])
    shapes = list(info.get("mismatched_keys") or [])
    if missing or shapes:
        examples = ", ".join([*missing[:3], *(str(m[0]) if isinstance(m, (tuple, list)) else str(m) for m in shapes[:3])])
        raise BadFileError(f"{shown} does not fit the {cls.__name__} its config.json describes ({len(missing)} "
                           f"missing and {len(shapes)} mis-shaped weights, e.g. {examples}); pass {expected}.")
    return model
