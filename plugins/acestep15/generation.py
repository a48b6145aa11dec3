"""``audiotrain generate`` for ACE-Step 1.5 (spec §5): a song from a caption, lyrics and optional metas, sampled by
the decoder (the adapter attached) and VAE-decoded to 48 kHz stereo.

The request goes through the very path the training cache took (:class:`~audiotrain_acestep15.encoders.
ConditionFeature`: ``prompts.SongText`` → the inference template → Qwen3 → the condition encoder), so the
caption / metas / lyric prompts are identical at training and at generation. Sampling (``sampling.py``):

- turbo variants (``tiny``, ``turbo``, ``xl-turbo``, or ``model.sampling.sampler=turbo``): ``--steps`` (8 by
  default, ``model.sampling.turbo_steps``) on the shifted turbo schedule (``--shift``, default 3); ``--guidance``
  is ignored, as ACE-Step 1.5's turbo model ignores CFG (a note says so);
- base / sft: ``--steps`` (default ``model.sampling.steps``) with guidance ``--guidance`` (``model.sampling.guidance``,
  APG or CFG per ``model.sampling.guidance_mode``) and ``--shift`` (``model.sampling.shift``).

The initial noise comes from a CPU generator seeded with ``seed`` only, so the same seed gives the same audio.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

#: latent frames per second (48 kHz / 1920)
FRAME_RATE = 25
HOP = 1920
DEFAULT_CAPTION = "An upbeat pop song with a female vocal, synth bass, bright keys and punchy drums."
DEFAULT_DURATION = 30.0
#: the longest song generated: what ACE-Step 1.5 trains on (spec §3: audio truncated to 240 s), whatever the run's
#: own ``dataset.max_duration`` (a smoke run trains on 6 s crops but plays longer songs)
MAX_DURATION = 240.0


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def lyrics_text(request: Mapping[str, Any]) -> str | None:
    """``--lyrics`` as text (``@FILE`` read from a UTF-8 file), or None (an instrumental: ``[Instrumental]``)."""
    from audiotrain.cli.text_input import text_or_file

    return text_or_file(request.get("lyrics"), "--lyrics") or None


def turbo(cfg) -> bool:
    """Whether this model samples on the turbo schedule (the backbone's own rule, from the run's config)."""
    from audiotrain_acestep15.plugin import AceStep15Plugin

    return AceStep15Plugin.settings(cfg).turbo_sampling


def sampler_settings(cfg, request: Mapping[str, Any]) -> dict[str, Any]:
    """The sampler and its steps / shift (/ guidance) for ``request``: its own values over ``model.sampling``."""
    s = cfg.model.sampling
    if turbo(cfg):
        return {"sampler": "turbo", "steps": int(request.get("steps") or s.turbo_steps),
                "shift": float(request.get("shift") or s.turbo_shift)}
    return {"sampler": "guided", "steps": int(request.get("steps") or s.steps),
            "guidance": float(request.get("guidance") or s.guidance), "shift": float(request.get("shift") or s.shift),
            "guidance_mode": str(s.guidance_mode)}


class AceStep15Generation:
    """The ``generate_*`` hooks of :class:`~audiotrain_acestep15.plugin.AceStep15Plugin` (a mixin)."""

    generate_text_field = "caption"

    def generate_options(self, parser) -> None:
        parser.add_argument("--caption", default=DEFAULT_CAPTION,
                            help="the text prompt: what the song sounds like (default: %(default)s)")
        parser.add_argument("--lyrics", default="",
                            help="the lyrics as text (with [verse] / [chorus] tags), or @FILE to read them from a "
                                 "UTF-8 file (default: none, an instrumental)")
        parser.add_argument("--duration", type=float, default=DEFAULT_DURATION,
                            help="the song's length in seconds, at 25 latent frames/s (default: %(default)s; at most "
                                 f"{MAX_DURATION:g})")
        parser.add_argument("--bpm", type=float, default=None, help="beats per minute (default: N/A)")
        parser.add_argument("--keyscale", default=None, help="the key, e.g. 'C major' (default: N/A)")
        parser.add_argument("--timesignature", default=None, help="beats per bar, e.g. 4 (default: N/A)")
        parser.add_argument("--language", default=None,
                            help="the lyrics' language code, e.g. en (default: unknown)")
        parser.add_argument("--steps", type=int, default=None,
                            help="sampling steps (default: 8 for turbo variants, model.sampling.steps for base/sft)")
        parser.add_argument("--guidance", type=float, default=None,
                            help="guidance scale for base/sft (default: model.sampling.guidance; turbo ignores it)")
        parser.add_argument("--shift", type=float, default=None,
                            help="timestep shift (default: model.sampling.turbo_shift for turbo variants, "
                                 "model.sampling.shift for base/sft)")

    def generate_check(self, cfg, request: Mapping[str, Any]) -> None:
        from audiotrain.errors import UserError

        caption = request.get("caption")
        if not isinstance(caption, str) or not caption.strip():
            raise UserError('--caption is empty: describe the song, e.g. --caption "A calm piano ballad with a male '
                            'vocal.".')
        lyrics_text(request)
        duration = request.get("duration")
        if not _positive(duration):
            raise UserError(f"--duration {duration} is not a positive number of seconds: pass e.g. --duration 30.")
        if float(duration) > MAX_DURATION:
            raise UserError(f"--duration {duration:g} is longer than the {MAX_DURATION:g} s ACE-Step 1.5 generates "
                            f"(its longest training songs): pass at most --duration {MAX_DURATION:g}.")
        for key in ("bpm", "guidance", "shift"):
            value = request.get(key)
            if value is not None and not _positive(value):
                raise UserError(f"--{key} {value} is not a positive number: pass e.g. --{key} "
                                f"{ {'bpm': 120, 'guidance': 7, 'shift': 3}[key]}, or leave it out.")
        steps = request.get("steps")
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
            raise UserError(f"--steps {steps} is not a whole number of steps >= 1: pass e.g. --steps 8.")
        for key in ("keyscale", "timesignature", "language"):
            value = request.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (str, int))):
                raise UserError(f"--{key} {value!r} is not text: pass e.g. --keyscale 'C major', --timesignature 4, "
                                f"--language en.")

    def generate(self, model, cfg, request: Mapping[str, Any], seed: int, *,
                 progress: Callable[[int, int], None] | None = None):
        """``(audio (2, T·1920) in [-1, 1], 48000)``: the request's condition (as cached at training), noise from
        ``seed``, the sampler of :func:`sampler_settings`, the VAE decode."""
        import torch

        from audiotrain.train.console import console
        from audiotrain_acestep15.sampling import initial_noise, sample_guided, sample_turbo

        backbone = model.backbone
        encoders = {e.name: e for e in model.encoders}
        duration = float(request["duration"])
        frames = max(1, round(duration * FRAME_RATE))
        example = {"key": "generate", "caption": str(request["caption"]).strip(), "lyrics": lyrics_text(request),
                   "audio_length": round(duration * 48000),
                   **{k: request.get(k) for k in ("bpm", "keyscale", "timesignature", "language")}}
        features = encoders["condition"].encode(example)
        device = next(backbone.parameters()).device
        dtype = next(backbone.parameters()).dtype
        width = int(backbone.model.config.audio_acoustic_hidden_dim)
        lengths = torch.tensor([frames])
        conditions = {"latent_mean": torch.zeros(1, frames, width, device=device, dtype=dtype),
                      "attention_mask": torch.ones(1, frames, device=device),
                      "latent_lengths": lengths.to(device),
                      "encoder_hidden_states": features["encoder_hidden_states"][None].to(device, dtype),
                      "encoder_attention_mask": features["encoder_attention_mask"][None].to(device)}
        cond = backbone.conditioning(conditions)
        noise = initial_noise((1, frames, width), torch.Generator().manual_seed(int(seed)), device).to(dtype)
        run = sampler_settings(cfg, request)
        if run["sampler"] == "turbo":
            if request.get("guidance") is not None:
                console.print(f"[yellow]Note:[/] --guidance {request['guidance']:g} is ignored: a turbo model samples "
                              f"without guidance ({run['steps']} steps, shift {run['shift']:g}).", highlight=False)
            latents = sample_turbo(backbone.model, noise, cond, steps=run["steps"], shift=run["shift"],
                                   progress=progress)
        else:
            latents = sample_guided(backbone.model, noise, cond, steps=run["steps"], guidance=run["guidance"],
                                    shift=run["shift"], guidance_mode=run["guidance_mode"], progress=progress)
        wavs, sr = backbone.decode(latents, lengths)
        return wavs[0].float().cpu().clamp(-1.0, 1.0), sr
