"""The LightningModule every plugin trains through.

It owns the backbone (trainable), reaches the frozen encoders only when features are not cached,
seeds every micro-step deterministically (so a resumed run is bit-identical to an uninterrupted
one), and saves only trainable weights in checkpoints when an adapter is used.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import lightning as L
import torch

from audiotrain.data.batching import Resumable
from audiotrain.data.streams import encoder_input
from audiotrain.data.given import as_tensors
from audiotrain.models.backbone import Backbone
from audiotrain.plugins.base import Plugin
from audiotrain.encoders.base import FrozenEncoder
from audiotrain.train import checkpoint_identity
from audiotrain.train.nonfinite import guarded_step
from audiotrain.train.optim import build_optimizer, build_scheduler, embedding_weights
from audiotrain.train.param_groups import torch_param_groups


# Attributes Lightning sets on the module around every hook call (dozens per step): plain values, so they skip
# nn.Module.__setattr__'s parameter/module/buffer bookkeeping (~0.7 ms a step on a small model).
_PLAIN_ATTRS = frozenset({"_current_fx_name", "_window", "step_metrics", "clip_grad_norm", "step_nonfinite",
                          "step_grad_norm"})


def _algorithm(value: Any) -> str:
    """'norm' / 'value' from Lightning's GradClipAlgorithmType or a plain string (str() of the enum is its name)."""
    return str(getattr(value, "value", value))


LR_KEY = "optimizer_lr"


def lr_note(saved: float | None, lr: float) -> str | None:
    """What a resume with another ``optimizer.lr`` than its checkpoint's should say (Lightning restores the
    optimizer and scheduler state, so the new value would not take effect), or None."""
    if saved is None or abs(saved - lr) <= 1e-12 * max(abs(saved), abs(lr)):
        return None
    return (f"optimizer.lr={lr:g} differs from the checkpoint's {saved:g}: a resume continues with the checkpoint's "
            f"optimizer and scheduler state, so training goes on at its learning rate; to train at {lr:g}, start a "
            f"new run from its weights with model.init_from=<its run directory> instead.")


class TrainModule(L.LightningModule):
    def __setattr__(self, name: str, value: Any) -> None:
        if name in _PLAIN_ATTRS:
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def __init__(self, backbone: Backbone, plugin: Plugin, cfg: Any, encoders: Sequence[FrozenEncoder],
                 sampler: Resumable | None, adapter_only: bool):
        super().__init__()
        self.backbone = backbone
        self.plugin = plugin
        self.cfg = cfg
        self._encoders = list(encoders)  # not submodules: never in checkpoints, moved on first use
        self._encoders_device: torch.device | None = None
        self.sampler = sampler
        self.adapter_only = adapter_only
        self.strict_loading = not adapter_only
        self.extra_state: dict[str, Any] = {}
        self.dataset = None  # set by the runner: conditioning clips come from other items of the dataset
        self._clip_specs = list(plugin.conditioning_clips(cfg))
        self.steps_per_epoch: int | None = None  # optimizer steps per epoch (epoch-based schedules)
        self._window: dict[str, tuple[Any, int]] = {}
        self.step_metrics: dict[str, float] = {}
        self.clip_grad_norm: torch.Tensor | None = None  # the total norm this step's clipping measured
        self.step_nonfinite = False  # this optimizer step had a NaN/Inf loss or gradient and was skipped
        self.step_grad_norm: torch.Tensor | None = None  # the total gradient norm the step's finiteness check measured
        # read every step: plain ints, not OmegaConf lookups
        self._seed = int(cfg.seed)
        self._accum = max(1, int(cfg.trainer.accumulate_grad_batches))
        self._total_steps = int(cfg.trainer.get("max_steps") or -1)
        # the first parameter (or None), found once: its dtype is read every step (a list, so that nn.Module
        # does not register it as a parameter of this module)
        self._param_probe: list[torch.Tensor | None] = []
        self._generators: dict[torch.device, torch.Generator] = {}  # one per device, re-seeded every step

    @property
    def total_steps(self) -> int:
        """The run's optimizer steps: ``trainer.max_steps``, or ``max_epochs`` x steps per epoch for an epoch-based
        run (0 when neither is known)."""
        if self._total_steps > 0:
            return self._total_steps
        epochs = int(self.cfg.trainer.get("max_epochs") or -1)
        return epochs * self.steps_per_epoch if epochs > 0 and self.steps_per_epoch else 0

    def pop_step_metrics(self) -> dict[str, float]:
        """``train/<name>`` means over the micro-batches since the last call (one optimizer step)."""
        out = {f"train/{k}": float(total) / max(count, 1) for k, (total, count) in self._window.items()}
        self._window = {}
        self.step_metrics = out
        return out

    @contextmanager
    def examples_from(self, dataset: Any) -> Iterator[None]:
        """``features`` draws same-speaker prompts from ``dataset`` inside (the validation set's own speakers)."""
        kept, self.dataset = self.dataset, dataset
        try:
            yield
        finally:
            self.dataset = kept

    # ---- features -------------------------------------------------------------------------
    def _item_features(self, ex: dict[str, Any]) -> dict[str, Any]:
        return dict(ex["features"]) if "features" in ex else self._encode(ex["raw"])

    def features(self, batch: list[dict[str, Any]], salt: int = 0, vary: bool = False) -> dict[str, Any]:
        """Per-example features (cached or encoded now), plus the conditioning clips the plugin declares
        (``Plugin.conditioning_clips``, cut by ``audiotrain.data.clips``), collated by the plugin and moved to
        the device. ``salt`` makes clip choices differ per step while staying reproducible (a resumed run
        cuts the same clips). ``vary`` (training steps) lets the plugin draw one of an example's cached
        variants (``Plugin.choose_variant``) from (seed, salt, index); otherwise it takes the first."""
        import random

        items = [dict(self.plugin.choose_variant(
            self._item_features(ex), random.Random(f"{self._seed}:{salt}:{int(ex.get('index', 0))}") if vary else None))
            for ex in batch]
        if self._clip_specs:
            from audiotrain.data.clips import attach

            ds = self.dataset
            attach(self._clip_specs, items, [int(ex.get("index", 0)) for ex in batch], self._seed, salt,
                   group_of=ds.same_group if ds is not None else None,
                   features_of=lambda j: dict(self.plugin.choose_variant(self._item_features(ds.features_of(j)), None)),
                   audio_of=ds.stream_audio if ds is not None else None,
                   stream_rate=(lambda role: float(ds.streams[role].sample_rate)) if ds is not None else None)
        out = self.plugin.collate(items)
        # floating inputs follow half-precision weights (DeepSpeed casts the module itself, in place: the
        # parameter objects stay, so one found once tells the dtype of every step)
        if not self._param_probe:  # a trainable one: a frozen base held in bf16 (model.frozen_dtype) keeps fp32 inputs
            params = list(self.backbone.parameters())
            self._param_probe.append(next((p for p in params if p.requires_grad), params[0] if params else None))
        dtype = self._param_probe[0].dtype if self._param_probe[0] is not None else None
        half = dtype if dtype in (torch.float16, torch.bfloat16) else None
        return {k: self._to_device(v, half) for k, v in out.items()}

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """Left as is: the batch is a list of per-example dicts, and ``features`` moves the collated tensors to
        the device after collating (one transfer per batched tensor, not one per example and key)."""
        return batch

    def _to_device(self, v: Any, half: torch.dtype | None = None) -> Any:
        if isinstance(v, torch.Tensor):
            return self._move(v, half)
        if isinstance(v, (list, tuple)) and v and all(isinstance(x, torch.Tensor) for x in v):
            return type(v)(self._move(x, half) for x in v)
        return v

    def _move(self, t: torch.Tensor, half: torch.dtype | None) -> torch.Tensor:
        if half is not None and t.is_floating_point():
            return t.to(self.device, dtype=half)
        return t.to(self.device)

    @torch.no_grad()
    def _encode(self, example: dict[str, Any]) -> dict[str, torch.Tensor]:
        if self._encoders_device != self.device:
            for t in self._encoders:
                if hasattr(t, "to"):
                    t.to(self.device)
            self._encoders_device = self.device
        feats: dict[str, torch.Tensor] = {}
        given = example.get("given") or {}
        for t in self._encoders:
            if t.name in given:  # outputs the dataset already holds (audiotrain.data.given)
                feats.update(as_tensors(given[t.name]))
                continue
            ex = encoder_input(example, getattr(t, "stream", None))
            if ex is None:  # an optional stream this example does not have
                continue
            ex = {k: (v.to(self.device) if isinstance(v, torch.Tensor) else v) for k, v in ex.items()}
            feats.update({k: v.to("cpu") for k, v in t.encode(ex).items()})
        return feats

    # ---- steps ----------------------------------------------------------------------------
    def step_generator(self, batch_idx: int) -> torch.Generator:
        seed = self._seed * 1_000_003 + int(self.global_step) * 64 + batch_idx % self._accum
        # dropout and any other global-RNG use in the step (torch.manual_seed itself is slow: it records
        # call stacks for lazy device seeding on every call)
        torch.random.default_generator.manual_seed(seed)
        if self.device.type == "cuda":
            torch.cuda.manual_seed(seed)
        device = self.device if self.device.type != "meta" else torch.device("cpu")
        gen = self._generators.get(device)
        if gen is None:
            gen = self._generators[device] = torch.Generator(device=device)
        return gen.manual_seed(seed)

    def training_step(self, batch: list[dict[str, Any]], batch_idx: int) -> torch.Tensor:
        gen = self.step_generator(batch_idx)
        self.backbone.training_progress(int(self.global_step), self.total_steps)
        feats = self.features(batch, salt=int(self.global_step) * 64 + batch_idx, vary=True)
        losses = self.backbone.training_losses(feats, generator=gen)
        bs = len(batch)
        # Averaged over the micro-batches of one optimizer step and read by the callbacks (cheaper than
        # Lightning's self.log on every micro-batch).
        for name, value in losses.items():
            total, count = self._window.get(name, (0.0, 0))
            self._window[name] = (total + value.detach().float(), count + 1)
        if self.sampler is not None:
            self.sampler.advance(bs)
        return losses["loss"]

    def configure_optimizers(self):
        opt = build_optimizer(self.cfg.optimizer, torch_param_groups(self.backbone, self.cfg.optimizer),
                              full_state=embedding_weights(self.backbone))
        total = int(self.cfg.trainer.max_steps)
        sched = build_scheduler(self.cfg.scheduler, opt, total, steps_per_epoch=self.steps_per_epoch)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}

    # ---- the optimizer step ---------------------------------------------------------------
    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        """Lightning's step, skipped when the loss or gradients are not finite (``audiotrain.train.nonfinite``)."""
        guarded_step(self, optimizer, optimizer_closure)

    # ---- clipping -------------------------------------------------------------------------
    def norm_from_clipping(self) -> bool:
        """True when this step's clipping computes the total gradient norm anyway (clip by norm, not DeepSpeed,
        which clips inside its engine): the grad_norm metric then reuses it instead of a second pass."""
        t = self.trainer
        return bool(t.gradient_clip_val) and _algorithm(t.gradient_clip_algorithm) == "norm" \
            and "deepspeed" not in type(t.strategy).__name__.lower()

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        self.clip_grad_norm = None
        if gradient_clip_val and _algorithm(gradient_clip_algorithm) == "norm" and self.norm_from_clipping():
            params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            norm = self.step_grad_norm  # measured by the step's finiteness check, as clip_grad_norm_ would
            if norm is None:
                self.clip_grad_norm = torch.nn.utils.clip_grad_norm_(params, float(gradient_clip_val))  # pre-clip
            else:
                torch.nn.utils.clip_grads_with_norm_(params, float(gradient_clip_val), norm)
                self.clip_grad_norm = norm
        else:
            super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    # ---- checkpoints ----------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.adapter_only:
            keep = {n for n, p in self.named_parameters() if p.requires_grad}
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
        checkpoint["audiotrain"] = {
            "sampler": self.sampler.state_dict() if self.sampler is not None else None,
            **self.extra_state,
            checkpoint_identity.KEY: checkpoint_identity.identity(self.cfg),  # what it is of (plugin, preset, LoRA)
            LR_KEY: float(self.cfg.optimizer.lr),  # the lr its optimizer state was built with (a resume keeps it)
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # before Lightning loads the weights: another plugin's, preset's or adapter's checkpoint is one sentence
        trainer = getattr(self, "_trainer", None)
        checkpoint_identity.check(checkpoint, self.cfg, trainer.ckpt_path if trainer else "the checkpoint", self)
        state = checkpoint.get("audiotrain") or {}
        if self.sampler is not None and state.get("sampler"):
            self.sampler.load_state_dict(state["sampler"])
        self.extra_state.update({k: v for k, v in state.items() if k not in ("sampler", checkpoint_identity.KEY, LR_KEY)})
        note = lr_note(state.get(LR_KEY), float(self.cfg.optimizer.lr))
        if note:
            from audiotrain.train.console import console

            console.print(f"[yellow]{note}[/]")
