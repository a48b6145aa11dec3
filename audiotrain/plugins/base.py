"""The Plugin seam: what a system registers under the ``audiotrain.plugins`` entry-point group.

A plugin is a plain object (usually a module-level instance of a :class:`Plugin` subclass). The core
never imports a plugin by name; it loads whatever the entry points name (see ``registry.py``).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

if TYPE_CHECKING:  # pragma: no cover - typing only
    import random

    import torch
    from omegaconf import DictConfig

    from audiotrain.data.audio_io import StreamSpec
    from audiotrain.data.clips import ClipSpec
    from audiotrain.data.manifest import Manifest
    from audiotrain.data.report import BadInputReport
    from audiotrain.lora.native_format import NativeFormat
    from audiotrain.models.backbone import Backbone
    from audiotrain.encoders.base import FrozenEncoder


class DataReader(ABC):
    """Recognises one on-disk data format and turns it into manifest rows."""

    #: short name shown to users ("raw song folder", "HF dataset saved to disk", ...)
    description: str = ""

    @abstractmethod
    def matches(self, path: Path) -> bool:
        """Whether ``path`` is in this reader's format (cheap check, no decoding)."""

    @abstractmethod
    def read(self, path: Path, report: "BadInputReport") -> "Manifest":
        """Read rows; every unusable item goes into ``report`` with its reason, never silently dropped."""


class Plugin(ABC):
    """Everything one system contributes to audiotrain."""

    #: the name users type: ``model=<name>``
    name: str = ""
    #: audio format the dataset prepares for this system
    sample_rate: int = 48000
    channels: int = 2
    #: the row field that names an example's group (e.g. its speaker): the speech batch sampler's speaker
    #: orders and the ``same_group`` conditioning clips read it. None: every example is in one group.
    group_field: str | None = None
    #: presets built from the original project's released configuration, each with the name of the reference key
    #: list its backbone's adapter root matches exactly (``tests/ref_keys/<name>.json``: key names and shapes of the
    #: released checkpoint); the plugin contract tests build each one on the meta device and compare.
    released_presets: Mapping[str, str] = {}

    @abstractmethod
    def config_options(self) -> Mapping[tuple[str, str], Path]:
        """Config group options this plugin adds: ``{(group, option): yaml_path}``.

        Must include ``("model", self.name)``. Options are composed into the global package, so a
        model option may also set the plugin's defaults for shared groups: its default option as a
        defaults-list ``- override /scheduler: constant`` (a user's scheduler=... replaces it) and tuned
        values only for keys every option of the group has (optimizer.lr, scheduler.warmup_steps, ...).
        """

    @abstractmethod
    def example_data(self, directory: Path, count: int = 4) -> Path:
        """Write a small synthetic dataset in this system's own format (nothing is downloaded) into ``directory``
        and return the path ``data=`` takes: a newcomer's first run, the demo and the plugin contract tests."""

    @abstractmethod
    def readers(self) -> Sequence[DataReader]:
        """Data formats this plugin understands, tried in order."""

    @abstractmethod
    def build_encoders(self, cfg: "DictConfig") -> list["FrozenEncoder"]:
        """Frozen encoders whose outputs are cached (order matters only for display)."""

    @abstractmethod
    def build_backbone(self, cfg: "DictConfig", *, device: str = "cpu") -> "Backbone":
        """The trainable network, weights loaded from ``model.checkpoint_dir`` when the preset asks for it."""

    @abstractmethod
    def collate(self, items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Batch a list of per-example feature dicts."""

    def validate(self, cfg: "DictConfig") -> list[str]:
        """Plugin-specific config errors (plain sentences); the core adds them to its own."""
        return []

    def fit_to_data(self, cfg: "DictConfig", train_count: int, val_count: int) -> list[str]:
        """Adjust the run to its data once it is known (``train_count`` usable training examples, ``val_count``
        held-out ones), before the loader and the model are built — e.g. a tool's rule that caps the batch at the
        dataset's size. Change ``cfg`` in place (it is writable here) and return one sentence per change, which
        the run prints and ``mode=plan`` shows. Default: nothing to adjust."""
        return []

    def audio_metrics(self, cfg: "DictConfig") -> Sequence[Any]:
        """This system's own scores of generated audio, computed by the audio evaluation beside
        ``eval/mel_distance`` (``trainer.eval_audio``, ``mode=eval``): objects with ``name`` (logged as
        ``eval/<name>``, the mean over the prompts that have a score) and ``score(audio (C, N) float tensor,
        sample_rate, row) -> float | None`` (None: this example is not scored, e.g. it has no caption). E.g. a
        caption-audio CLAP similarity from a local folder. Default: none."""
        return []

    def lora_module_names(self, cfg: "DictConfig") -> list[str]:
        """Module names LoRA can target, without loading weights (default: build on the meta device)."""
        import torch

        with torch.device("meta"):
            backbone = self.build_backbone(cfg, device="meta")
        return backbone.lora_module_names()

    def commands(self) -> Mapping[str, Callable[[list[str]], int]]:
        """Extra ``audiotrain <command>`` subcommands (e.g. ``convert``)."""
        return {}

    def prepare_example(self, row: Mapping[str, Any], rng: Any) -> dict[str, Any]:
        """Turn a manifest row into the example the encoders read (default: the row itself)."""
        return dict(row)

    def choose_variant(self, features: Mapping[str, Any], rng: "random.Random | None") -> Mapping[str, Any]:
        """One example's features as a training step uses them, when an encoder caches several variants of an
        augmentation (e.g. K text prompts per song): pick one with ``rng`` — seeded by the run's seed, the step and
        the example's index, so a resumed run draws the same — or, with ``rng`` None (evaluation, samples), the
        first. Return a new mapping; never change ``features`` (the dataset keeps it in memory). Default: as is."""
        return features

    def describe_example(self, row: Mapping[str, Any]) -> str:
        """Markdown for people: what conditions this example (written beside its audio samples).

        Default: each non-empty text field of the row (a list of strings joined with commas) under its name.
        """
        parts = []
        for name, value in row.items():
            if name in ("key", "audio_path"):
                continue
            if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
                value = ", ".join(value)
            if isinstance(value, str) and value.strip():
                parts.append(f"{name.upper()}: {value}")
        return "\n\n".join(parts)

    def filter_items(self, items: list, cfg: "DictConfig", report: "BadInputReport") -> list:
        """Drop prepared items the system cannot train on (each reported with its reason). Default: keep all."""
        return items

    def audio_spec(self, cfg: "DictConfig"):
        """How this system wants its audio (rate/channels from the plugin, bounds from ``dataset``)."""
        from audiotrain.data.audio_io import AudioSpec

        d = cfg.dataset
        return AudioSpec(sample_rate=self.sample_rate, channels=self.channels,
                         min_duration=float(d.min_duration), max_duration=float(d.max_duration),
                         silence_threshold=float(d.silence_threshold))

    def native_adapter_format(self) -> "NativeFormat | None":
        """The original project's LoRA file, if it has one (see ``audiotrain.lora.native_format``)."""
        return None

    #: True for a system whose original model is a transformers model with audiotrain's module names and no LoRA
    #: file of its own: the PEFT folder audiotrain writes is what its ecosystem loads (``PeftModel.from_pretrained``
    #: on the original model), so ``native_adapter_format`` is None by design (the contract tests check the names)
    peft_is_native: bool = False

    def audio_streams(self, cfg: "DictConfig") -> "Mapping[str, StreamSpec]":
        """The audio streams a row holds, by role, each with the spec the core decodes it to (rate, channels,
        bounds) and whether it is required. Default: one required ``main`` stream (``audio_spec``). The first
        role is the primary one (an example's duration); each frozen encoder names its role (``stream``)."""
        from audiotrain.data.streams import as_streams

        return as_streams(self.audio_spec(cfg))

    def conditioning_clips(self, cfg: "DictConfig") -> "Sequence[ClipSpec]":
        """Conditioning clips each training example gets (``audiotrain.data.clips``): count, length, source
        (same file / same group / either) and what they are cut from. Default: none."""
        return []

    #: keys of the released checkpoint the loader drops on purpose (patterns; e.g. buffers a newer library no
    #: longer keeps), left out when the plugin contract compares a released preset with the reference keys
    dropped_release_keys: tuple[str, ...] = ()

    def save_weights_native(self, root: "torch.nn.Module", settings: Any, directory: Path, step: int) -> Path | None:
        """At every adapter save (``directory`` is the folder being written, ``step`` the optimizer step): the
        weights as the original tool loads them, when it has no adapter format of its own — e.g. a whole-model
        file with the LoRA merged in. ``settings`` is None for a full fine-tune. Default: nothing more."""
        return None

    def save_adapter_native(self, root: "torch.nn.Module", settings: Any, directory: Path) -> Path | None:
        """Write the adapter in the original project's format too (None: the system has none)."""
        fmt = self.native_adapter_format()
        return fmt.save(root, settings, directory) if fmt is not None else None

    def read_adapter_native(self, path: Path, root: "torch.nn.Module") -> "tuple[Any, dict] | None":
        """``lora.init_from=path`` in an original layout that the one-file ``native_adapter_format`` does not
        describe (written by an overridden ``save_adapter_native``): ``(LoRASettings, tensors keyed as
        ``adapter_state(root)`` keys them)`` read as data, strictly, for the adapter attached to ``root``; None when
        ``path`` is not in such a layout (the core then reads PEFT folders, the native file and run directories).
        Default: None."""
        return None

    # ---- audiotrain generate (optional: a plugin without these hooks cannot generate) ---------------------
    #: the input a line of a plain-text ``--prompts`` file fills (an option ``generate_options`` adds)
    generate_text_field: str = "text"

    def generate_options(self, parser: Any) -> None:
        """Add this system's own ``audiotrain generate`` inputs to ``parser`` (an argparse group), each with a default
        and a help line; their dest names are the keys of a request and of a ``.jsonl`` prompts line."""
        raise NotImplementedError(f"the {self.name} plugin has no generate_options hook")

    def generate_check(self, cfg: "DictConfig", request: Mapping[str, Any]) -> None:
        """Check one request before any model is built; raise a ``UserError`` (one sentence) for a bad input."""

    def generate(self, model: Any, cfg: "DictConfig", request: Mapping[str, Any], seed: int, *,
                 progress: Callable[[int, int], None] | None = None) -> tuple[Any, int]:
        """Render one request: ``(audio (channels, samples) float tensor in [-1, 1], sample_rate)``; a system that
        renders several tracks returns ``({track: audio}, sample_rate)``, the main track first (written as the
        prompt's wav, the others beside it as ``<name>_<track>.wav``).

        ``model`` is ``audiotrain.cli.generate_source.GenerationModel`` (``.backbone`` with the adapter attached
        and scaled, in eval mode; ``.encoders`` from ``build_encoders``). The same ``seed`` must give the same
        audio. ``progress(done, total)``, when given, is called as the steps go."""
        raise NotImplementedError(f"the {self.name} plugin has no generate hook")

    def save_merged(self, backbone: "Backbone", cfg: "DictConfig", directory: Path) -> Path:
        """Write a merged (adapter-free) backbone; plugins override this to use the original layout."""
        from safetensors.torch import save_file

        directory.mkdir(parents=True, exist_ok=True)
        out = directory / "model.safetensors"
        from audiotrain.models.state_dict import savable

        save_file(savable(backbone.adapter_root().state_dict()), str(out))
        return out
