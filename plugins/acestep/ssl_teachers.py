"""ACE-Step's optional REPA teachers (MERT-v1-330M, mHuBERT-147) as one frozen-encoder FrozenEncoder.

Off unless the user gives BOTH local teacher folders (``model.ssl.mert_path``, ``model.ssl.mhubert_path``)
and ``model.ssl_coeff > 0``. Like the other frozen encoders the features are computed once into the
feature cache, so with the cache the teachers are never loaded during training.

Per song and teacher (trainer.py ``preprocess`` step 1): stereo → mono mean → resample 48 kHz to the
teacher's rate → zero mean / unit variance over the valid length (unbiased variance, eps 1e-7) → split
the valid part into fixed chunks (MERT 5 s, mHuBERT 30 s), zero-pad the last one → one batched forward
→ ``last_hidden_state`` → keep ``ceil(chunk_valid / samples_per_frame)`` frames of each chunk (never more
than the model returns: a full 5 s MERT chunk gives 374 frames, not ceil(120000/320) = 375) → concatenate.

The result is ``{"ssl_mert": (T, 1024), "ssl_m-hubert": (T, 768)}``; the names are the transformer's
``ssl_names`` because it pairs projector k with teacher k.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F

from audiotrain.data.streams import MAIN
from audiotrain.errors import UserError
from audiotrain.encoders.base import FrozenEncoder, file_fingerprint, stable_hash

#: bump when the feature computation changes, so old cache entries are not reused
FORMAT_VERSION = 1
SOURCE_RATE = 48000
WEIGHT_PATTERNS = ("*.safetensors", "*.bin")


@dataclass(frozen=True)
class TeacherSpec:
    """How one teacher is fed: its rate, chunk length and hop (input samples per output frame)."""

    name: str               # feature ``ssl_<name>``; must be the transformer's ssl_names[k]
    override: str           # the config key of its folder (named in error messages)
    title: str              # the released model it expects
    sample_rate: int
    chunk_samples: int
    samples_per_frame: int = 320
    eps: float = 1e-7

    def key_fields(self) -> dict[str, Any]:
        """What changes the output (not the names used in messages)."""
        return {"name": self.name, "sample_rate": self.sample_rate, "chunk_samples": self.chunk_samples,
                "samples_per_frame": self.samples_per_frame, "eps": self.eps}


MERT = TeacherSpec("mert", "model.ssl.mert_path", "m-a-p/MERT-v1-330M", 24000, 24000 * 5)
MHUBERT = TeacherSpec("m-hubert", "model.ssl.mhubert_path", "utter-project/mHuBERT-147", 16000, 16000 * 30)
#: the teachers in projector order; read at call time (tests shrink them)
SPECS: tuple[TeacherSpec, ...] = (MERT, MHUBERT)

BOTH_NEEDED = ("REPA teachers need both model.ssl.mert_path and model.ssl.mhubert_path (ACE-Step pairs its two "
               "projectors with MERT and mHuBERT): set the missing one, or unset both to train without them.")


# ---- folders ------------------------------------------------------------------------------
def weight_files(folder: Path) -> list[Path]:
    return sorted({p for pat in WEIGHT_PATTERNS for p in folder.glob(pat) if p.is_file()})


def declares_code(folder: Path) -> bool:
    """True when the folder's config.json maps its classes to Python files of its own (``auto_map``), as MERT's
    does: loading it would run that code."""
    try:
        return bool(json.loads((folder / "config.json").read_text(encoding="utf-8")).get("auto_map"))
    except (OSError, ValueError, AttributeError):
        return False


def code_allowed(cfg: Any) -> bool:
    """``model.ssl.trust_remote_code``: the explicit opt-in to run a teacher folder's own Python code."""
    return bool((cfg.model.get("ssl") or {}).get("trust_remote_code"))


def folder_problem(path: Any, spec: TeacherSpec, allow_code: bool = False) -> str | None:
    """One sentence when ``path`` cannot be ``spec``'s teacher folder (or would run its own code without the
    opt-in), else None."""
    folder = Path(str(path)).expanduser()
    fix = f"give the local folder of {spec.title} (config.json and its weights) or unset {spec.override}"
    if not folder.is_dir():
        return f"{spec.override}={path} is not a folder: {fix}."
    if not (folder / "config.json").is_file():
        return f"{spec.override}={path} has no config.json: {fix}."
    if not weight_files(folder):
        return f"{spec.override}={path} has no weights (*.safetensors or *.bin): {fix}."
    if declares_code(folder) and not allow_code:
        return (f"{spec.override}={path} ships its own Python code (config.json auto_map), which audiotrain runs only "
                f"when you opt in: read the folder's *.py files, then add model.ssl.trust_remote_code=true.")
    return None


def folder_fingerprint(path: Any) -> list[tuple[str, str]]:
    """Identity of a teacher folder: its weight files, config.json and remote code (*.py)."""
    folder = Path(str(path)).expanduser()
    files = set(weight_files(folder)) | {folder / "config.json"} | {p for p in folder.glob("*.py") if p.is_file()}
    return [(p.name, file_fingerprint(str(p))) for p in sorted(files)]


def teacher_paths(cfg: Any) -> tuple[Any, Any]:
    ssl = cfg.model.get("ssl") or {}
    return ssl.get("mert_path") or None, ssl.get("mhubert_path") or None


# ---- loading ------------------------------------------------------------------------------
def check_weights(path: Any, spec: TeacherSpec, trust_pickle: bool = False) -> None:
    """Read the folder's weights as data before transformers opens them: safetensors headers (a truncated copy is
    one sentence), ``*.bin`` with ``torch.load(weights_only=True)`` (a pickle that carries code is refused unless
    ``trust_pickle=true``; transformers then reads it with ``weights_only=True`` too)."""
    from audiotrain.safe_files import load_torch, safetensors_metadata

    expected = f"the unmodified local folder of {spec.title}"
    files = weight_files(Path(str(path)).expanduser())
    if any(f.suffix == ".safetensors" for f in files):  # transformers reads these and never the .bin
        for f in (f for f in files if f.suffix == ".safetensors"):
            safetensors_metadata(f, option=spec.override, expected=expected)
        return
    for f in files:
        load_torch(f, option=spec.override, expected=expected, trust_pickle=trust_pickle, map_location="meta")


def load_teacher(path: Any, spec: TeacherSpec, allow_code: bool = False, trust_pickle: bool = False) -> torch.nn.Module:
    """The frozen HF model in ``path`` (local files only), fp32, eval. A folder with its own Python code (MERT's)
    loads only with ``allow_code`` (``model.ssl.trust_remote_code=true``); its weights are read as data first
    (:func:`check_weights`)."""
    problem = folder_problem(path, spec, allow_code)
    if problem:
        raise UserError(problem)
    check_weights(path, spec, trust_pickle)
    import transformers

    folder = str(Path(str(path)).expanduser())
    try:
        config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True, trust_remote_code=allow_code)
        if not hasattr(config, "conv_pos_batch_norm"):
            # MERT's config predates this flag, which newer transformers' HuBERT layers read; MERT's weights are
            # the weight-norm variant (False). ACE-Step patches the same value into the cached config.
            config.conv_pos_batch_norm = False
        model = transformers.AutoModel.from_pretrained(folder, config=config, local_files_only=True,
                                                       trust_remote_code=allow_code)
    except (OSError, ValueError, ImportError, AttributeError, KeyError, TypeError, RuntimeError) as exc:
        raise UserError(f"{spec.override}={path} could not be loaded as {spec.title} ({type(exc).__name__}: "
                        f"{exc}); give the unmodified Hugging Face folder of {spec.title}.") from exc
    return model.float().eval().requires_grad_(False)


def frames_per_chunk(valid: int, spec: TeacherSpec, available: int) -> int:
    """Frames kept from one chunk with ``valid`` real samples: ceil(valid / hop), at most what the model gave."""
    return min(math.ceil(valid / spec.samples_per_frame), int(available))


# ---- the tokenizer ------------------------------------------------------------------------
class SSLTeacherFeature(FrozenEncoder):
    """``example["audio"]`` (2, N) @ 48 kHz → ``{"ssl_<name>": (T_ssl, d)}`` float32 CPU, one per teacher."""

    name = "ssl"
    stream = MAIN

    def __init__(self, teachers: Sequence[tuple[TeacherSpec, torch.nn.Module]], key: str = "",
                 source_rate: int = SOURCE_RATE):
        self.specs = [s for s, _ in teachers]
        self.models = [m.eval().requires_grad_(False) for _, m in teachers]
        self.source_rate = int(source_rate)
        self._key = key or stable_hash("acestep-ssl", FORMAT_VERSION, self.source_rate,
                                       [s.key_fields() for s in self.specs])

    @classmethod
    def from_folders(cls, paths: Sequence[Any], specs: Sequence[TeacherSpec], key: str = "",
                     expected_dims: Sequence[int] | None = None, source_rate: int = SOURCE_RATE,
                     allow_code: bool = False, trust_pickle: bool = False) -> "SSLTeacherFeature":
        """Load every teacher and check its hidden size against the transformer's ``ssl_latent_dims``."""
        teachers = []
        for k, (path, spec) in enumerate(zip(paths, specs)):
            model = load_teacher(path, spec, allow_code, trust_pickle)
            got = int(model.config.hidden_size)
            if expected_dims is not None and got != int(expected_dims[k]):
                raise UserError(
                    f"{spec.override}={path} gives {got}-d features but the transformer's '{spec.name}' projector "
                    f"predicts {int(expected_dims[k])}-d ones (ssl_latent_dims): give the folder of {spec.title}.")
            teachers.append((spec, model))
        return cls(teachers, key, source_rate)

    def cache_key(self) -> str:
        return self._key

    def to(self, device: Any) -> "SSLTeacherFeature":
        for m in self.models:
            m.to(device)
        return self

    @torch.no_grad()
    def encode(self, example: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        audio = torch.as_tensor(example["audio"])
        n = audio.shape[-1]
        valid = int(example.get("audio_length") or n)
        valid = max(1, min(valid, n))
        mono = audio.float().mean(dim=0) if audio.ndim == 2 else audio.float().reshape(-1)
        return {f"ssl_{spec.name}": self.features(mono, valid, spec, model)
                for spec, model in zip(self.specs, self.models)}

    def features(self, mono: torch.Tensor, valid_source: int, spec: TeacherSpec,
                 model: torch.nn.Module) -> torch.Tensor:
        """One teacher's ``(T_ssl, d)`` for a mono 48 kHz signal whose first ``valid_source`` samples are real."""
        from audiotrain_acestep.resample import resample

        param = next(model.parameters())
        wav = resample(mono.to(param.device), self.source_rate, spec.sample_rate)
        valid = max(1, min(wav.shape[-1], valid_source * spec.sample_rate // self.source_rate))
        seg = wav[:valid]
        seg = (seg - seg.mean()) / torch.sqrt(seg.var(correction=1 if valid > 1 else 0) + spec.eps)
        size = int(spec.chunk_samples)
        lengths = [min(size, valid - start) for start in range(0, valid, size)]
        chunks = torch.stack([F.pad(seg[k * size: k * size + n], (0, size - n)) for k, n in enumerate(lengths)])
        hidden = model(input_values=chunks.to(param.dtype)).last_hidden_state
        keep = [frames_per_chunk(n, spec, hidden.shape[1]) for n in lengths]
        return torch.cat([hidden[k, :t] for k, t in enumerate(keep)]).to("cpu", torch.float32)


# ---- wiring -------------------------------------------------------------------------------
def cache_key(paths: Sequence[Any], specs: Sequence[TeacherSpec], source_rate: int = SOURCE_RATE) -> str:
    return stable_hash("acestep-ssl", FORMAT_VERSION, int(source_rate), [s.key_fields() for s in specs],
                       *(folder_fingerprint(p) for p in paths))


def lazy_tokenizer(cfg: Any, transformer_cfg: Mapping[str, Any]):
    """The ``ssl`` LazyEncoder, or None when the teachers are off (no folders, or ``model.ssl_coeff`` 0)."""
    from audiotrain.encoders.lazy import LazyEncoder

    paths = teacher_paths(cfg)
    if not any(paths):
        return None
    if not all(paths):
        raise UserError(BOTH_NEEDED)
    if float(cfg.model.get("ssl_coeff") or 0.0) <= 0:
        return None
    specs = tuple(SPECS)
    names = [str(n) for n in transformer_cfg["ssl_names"]]
    if names != [s.name for s in specs]:
        raise UserError(f"The transformer's ssl_names {names} are not the teachers {[s.name for s in specs]}: "
                        "use an ACE-Step v1 transformer config, or unset model.ssl.mert_path/mhubert_path.")
    allow = code_allowed(cfg)
    for path, spec in zip(paths, specs):
        problem = folder_problem(path, spec, allow)
        if problem:
            raise UserError(problem)
    key = cache_key(paths, specs)
    dims = [int(d) for d in transformer_cfg["ssl_latent_dims"]]
    trust = bool(cfg.get("trust_pickle", False))
    return LazyEncoder("ssl", key, lambda: SSLTeacherFeature.from_folders(paths, specs, key, dims, allow_code=allow,
                                                                          trust_pickle=trust),
                         stream=MAIN)
