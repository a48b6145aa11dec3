"""The Plugin seam: what a system registers under the ``audiotrain.plugins`` entry-point group.

A plugin is a plain object (usually a module-level instance of a :class:`Plugin` subclass). The core
never imports a plugin by name; it loads whatever the entry points name (see ``registry.py``).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch
    from omegaconf import DictConfig

    from audiotrain.data.manifest import Manifest
    from audiotrain.data.report import BadInputReport
    from audiotrain.models.backbone import Backbone
    from audiotrain.tokenizers.base import Tokenizer


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
    #: "speaker": each training example also gets the features of another utterance of the same speaker
    #: (under ``"prompt"``, with a ``"prompt_seed"``) — e.g. VALL-E's acoustic prompt. None: no companion.
    prompt_source: str | None = None

    @abstractmethod
    def config_options(self) -> Mapping[tuple[str, str], Path]:
        """Config group options this plugin adds: ``{(group, option): yaml_path}``.

        Must include ``("model", self.name)``. Options are composed into the global package, so a
        model option may also set the plugin's defaults for shared groups: its default option as a
        defaults-list ``- override /scheduler: constant`` (a user's scheduler=... replaces it) and tuned
        values only for keys every option of the group has (optimizer.lr, scheduler.warmup_steps, ...).
        """

    @abstractmethod
    def readers(self) -> Sequence[DataReader]:
        """Data formats this plugin understands, tried in order."""

    @abstractmethod
    def build_tokenizers(self, cfg: "DictConfig") -> list["Tokenizer"]:
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
        """Turn a manifest row into the example the tokenizers read (default: the row itself)."""
        return dict(row)

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

    def save_adapter_native(self, root: "torch.nn.Module", settings: Any, directory: Path) -> Path | None:
        """Write the adapter in the original project's format too (None: the system has none)."""
        return None

    def save_merged(self, backbone: "Backbone", cfg: "DictConfig", directory: Path) -> Path:
        """Write a merged (adapter-free) backbone; plugins override this to use the original layout."""
        from safetensors.torch import save_file

        directory.mkdir(parents=True, exist_ok=True)
        out = directory / "model.safetensors"
        save_file({k: v.contiguous() for k, v in backbone.adapter_root().state_dict().items()}, str(out))
        return out
