"""The Backbone seam: the trainable network of one system.

A plugin subclasses :class:`Backbone`. The core only relies on what is declared here:
it feeds batches of (cached) features, reads back named losses/metrics, attaches LoRA to the
modules named by ``default_lora_targets`` (or the user's list), builds the optimizer's parameter groups from
``parameter_groups``, and asks for audio samples.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import torch
from torch import nn

if TYPE_CHECKING:
    from audiotrain.train.param_groups import ParamGroup


class Backbone(nn.Module, ABC):
    """Trainable network of a system.

    ``training_losses`` returns a dict with at least ``"loss"`` (the scalar to optimise); every
    other entry is logged as a metric under ``train/<name>``.
    """

    #: PEFT target-module suffixes used when the user gives none.
    default_lora_targets: tuple[str, ...] = ()

    @abstractmethod
    def training_losses(self, batch: Mapping[str, Any], generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Compute named losses for one batch of features."""

    def frozen_patterns(self) -> list[str]:
        """``model.freeze``-style patterns this system never trains (frozen encoders kept inside the backbone for
        the checkpoint layout, parts a stage of its recipe freezes): applied with ``model.freeze`` in every run,
        counted in the trainable/frozen table. The default freezes nothing."""
        return []

    def init_weights(self, state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str | None]:
        """Full weights ``model.init_from`` read (adapter-root keys), as this model takes them, and a note for the
        run's console (None: nothing to say). For a recipe whose stages change the layout on purpose (a stage
        drops heads the earlier one had): drop exactly those keys and say so; the load after it stays strict.
        The default takes the weights as they are."""
        return state, None

    def training_progress(self, step: int, total: int) -> None:
        """Called before every training step with the optimizer step about to be taken (0-based; restored on
        resume) and the run's total (``trainer.max_steps``): for losses whose weighting follows the run's progress
        (a curriculum). The default ignores it."""

    def sample_audio(self, conditions: Mapping[str, Any], *, seed: int) -> tuple[torch.Tensor, int]:
        """Generate audio for fixed prompts; returns (waveforms (B, C, N), sample_rate). A system that renders
        several tracks at once (a song's accompaniment and vocals beside their mix) returns ``({track: (B, C,
        N)}, sample_rate)``, the main track first: it is the sample (and what evaluation scores), the others are
        written beside it (``audiotrain.tracking.samples.tracks``).

        How long or how finely it samples (diffusion steps, the most autoregressive frames) is the plugin's own
        setting in its model group, read by the backbone. Plugins that cannot render audio keep the default,
        and sample callbacks skip them.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot render audio samples")  # abstract: optional capability

    def reference_audio(self, conditions: Mapping[str, Any]) -> tuple[torch.Tensor, int] | None:
        """The training targets rendered as audio (e.g. codec reconstructions), for side-by-side samples.

        None when the system cannot render them.
        """
        return None

    def adapter_root(self) -> nn.Module:
        """The module LoRA is injected into; its module names are the original project's names."""
        return self

    def release_unused_weights(self, lora_targets: Sequence[str]) -> int:
        """Adapter training only: free the weights that the forward pass never reads and no LoRA target names
        (the checkpoint loader still reads them; adapters and adapter-only checkpoints never hold them).
        Returns how many parameters were freed; the default keeps everything."""
        return 0

    def parameter_groups(self) -> "list[ParamGroup]":
        """Optimizer parameter groups (name, match rule or name patterns, lr multiplier, weight decay or None for
        ``optimizer.weight_decay``), first match wins; whatever none matches is the ``default`` group. The
        default declares none: one AdamW group over every trainable parameter. A plugin that wants no weight
        decay on biases, norms and embeddings returns ``[no_decay_group()]`` (audiotrain.train.param_groups);
        ``optimizer.groups.<name>`` adjusts any of them from the config."""
        return []

    def lora_module_names(self) -> list[str]:
        """Names of the modules LoRA can target (Linear / Conv / Embedding leaves)."""
        kinds = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Embedding)
        return [name for name, mod in self.adapter_root().named_modules() if isinstance(mod, kinds)]
