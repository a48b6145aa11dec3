"""The TorToiSe plugin (registered under the ``audiotrain.plugins`` entry point): ai-voice-cloning's voice
fine-tuning of TorToiSe's autoregressive model on audiotrain's core.

Data: AIVC's training folder (``train.txt``: ``audio/<file>.wav|text``; ``tortoise-prepare`` writes it from a
voice folder), one stream ``main`` at 22,050 Hz mono of 0.6–11.61 s. Frozen encoders (``features.py``): the
clip's mel and the DVAE codes of its padded wav, and the BPE text ids. Two 2-s conditioning clips are cut from
the clip's own mel every step (the core's clips, reproducible on resume). Before training, AIVC's "Validate
Training Configuration" rules are applied to the data and each change said (``fit_to_data``; ``mode=plan``
shows them). Every save writes ``<step>_gpt.pth`` — the whole UnifiedVoice, a LoRA merged in — which TorToiSe
and AIVC load as they are.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from audiotrain.plugins.base import Plugin

CONF = Path(__file__).resolve().parent / "conf"
MAX_TEXT_TOKENS = 200  # DLAS max_text_length (tokens)
#: the step settings AIVC's plan fills in from epochs unless they were given (their defaults: tortoise.yaml)
STEP_KEYS = ("trainer.max_steps", "trainer.every_n_train_steps", "trainer.val_check_interval",
             "scheduler.milestones", "scheduler.period_steps")


class TortoisePlugin(Plugin):
    name = "tortoise"
    sample_rate = 22050
    channels = 1
    #: AIVC has no adapter format: a LoRA run's adapter is PEFT's folder, and every save also writes the
    #: merged <step>_gpt.pth TorToiSe loads (save_weights_native)
    peft_is_native = True
    released_presets = {"release": "tortoise_autoregressive"}
    #: GPT-2's causal-mask buffers, which old autoregressive.pth files carry and the loader drops (spec §3.5)
    dropped_release_keys = ("gpt.h.*.attn.bias", "gpt.h.*.attn.masked_bias")

    def config_options(self):
        return {("model", "tortoise"): CONF / "model" / "tortoise.yaml"}

    def example_data(self, directory, count: int = 4):
        from audiotrain_tortoise.example_data import write_training_folder

        return write_training_folder(directory, count)

    def commands(self):
        from audiotrain_tortoise.prepare import prepare

        return {"tortoise-prepare": prepare}

    def readers(self):
        from audiotrain_tortoise.readers import AIVCTrainingFolder

        return [AIVCTrainingFolder()]

    def audio_streams(self, cfg):
        from audiotrain.data.audio_io import StreamSpec

        d = cfg.dataset if cfg is not None else None
        lo = float(d.min_duration) if d is not None else 0.6
        hi = float(d.max_duration) if d is not None else 11.609750566893424
        # strict: DLAS rejects a clip outside these bounds (its transcript is of the whole clip), never cuts it
        return {"main": StreamSpec(sample_rate=self.sample_rate, channels=1, min_duration=lo, max_duration=hi,
                                   strict_bounds=True)}

    def build_encoders(self, cfg):
        from audiotrain_tortoise.features import build_encoders

        return build_encoders(cfg)

    @staticmethod
    def model_config(cfg) -> dict[str, Any]:
        from audiotrain_tortoise.presets import resolve_config

        m = cfg.model
        return resolve_config({"preset": str(m.preset), "tortoise_compat": bool(m.get("tortoise_compat", True)),
                               "cond_residual": str(m.get("cond_residual", "tortoise"))})

    def build_backbone(self, cfg, *, device: str = "cpu"):
        from audiotrain.models.presets import seeded
        from audiotrain_tortoise.backbone import TortoiseBackbone
        from audiotrain_tortoise.unified_voice import UnifiedVoice

        m = cfg.model
        mcfg = self.model_config(cfg)
        if device == "meta":
            model = UnifiedVoice(mcfg)
        elif m.get("checkpoint"):
            from audiotrain_tortoise.checkpoint import load_autoregressive

            model = load_autoregressive(m.checkpoint, mcfg, option="model.checkpoint")
        else:
            model = seeded(lambda: UnifiedVoice(mcfg))
        model.train()

        def front_end():
            from audiotrain_tortoise.features import speech_front_end

            return speech_front_end(cfg)

        return TortoiseBackbone(model, mel_weight=float(m.mel_loss_weight), text_weight=float(m.text_loss_weight),
                                sample_max_codes=int(m.get("sample_max_codes", 250)),
                                front_end=front_end if device != "meta" else None)

    def conditioning_clips(self, cfg):
        """Two random 2-s crops (172 mel frames) of the clip itself, as AIVC's data (no similarities.pth)."""
        from audiotrain.data.clips import ClipSpec

        from audiotrain_tortoise.collate import CLIPS
        from audiotrain_tortoise.mel import HOP

        frames_per_second = self.sample_rate / HOP
        seconds = 172 / frames_per_second
        return [ClipSpec(CLIPS, count=int(cfg.model.get("conditioning_clips", 2)), seconds=(seconds, seconds),
                         source="same_file", features={"mel": (frames_per_second, -1)}, start="random", pad=True)]

    def collate(self, items: Sequence[Mapping[str, Any]]):
        from audiotrain_tortoise.collate import collate

        return collate(items, getattr(self, "_mel_norms", None))

    def prepare_example(self, row, rng):
        return {"key": row["key"], "text": str(row.get("text", ""))}

    def describe_example(self, row):
        return f"TRANSCRIPT: {row.get('text', '')}"

    def filter_items(self, items, cfg, report):
        """DLAS's rules on a line: text of at most 200 characters and 200 tokens, no character the tokenizer
        cannot spell ([UNK]/[STOP]: DLAS asserts on them), each culled line reported."""
        from audiotrain_tortoise.features import tokenizer_of

        tok = tokenizer_of(cfg)
        most = int(cfg.model.get("max_text_chars", 200))
        kept = []
        for it in items:
            text = str(it.row.get("text", ""))
            if len(text) > most:
                report.add(it.audio_path, f"the transcript is {len(text)} characters, more than DLAS's {most}: "
                                          f"split the clip (tortoise-prepare --slice)")
                continue
            unknown = tok.unknown_characters(text)
            if unknown:
                fix = ("write them as words, or set model.text_cleaner=english (TorToiSe's cleaner spells numbers "
                       "and symbols out)" if tok.cleaner != "english" else "write them as words")
                report.add(it.audio_path, f"the transcript has characters the tokenizer cannot spell "
                                          f"({' '.join(repr(c) for c in unknown)}): {fix}")
                continue
            n = len(tok.encode(text))
            if n > MAX_TEXT_TOKENS:
                report.add(it.audio_path, f"the transcript is {n} tokens, more than DLAS's {MAX_TEXT_TOKENS}: split "
                                          f"the clip")
                continue
            kept.append(it)
        return kept

    def fit_to_data(self, cfg, train_count, val_count):
        """AIVC's "Validate Training Configuration" on these lines (aivc.py): each change said, the plan applied."""
        from audiotrain_tortoise.aivc import SettingsError, overrides, plan, settings_from, validate
        from audiotrain.errors import UserError

        import torch

        gpus = torch.cuda.device_count() if str(cfg.trainer.get("accelerator", "auto")) != "cpu" else 0
        vram = cfg.model.get("gpu_vram_gib")
        if vram is None and gpus:
            vram = torch.cuda.get_device_properties(0).total_memory / 2**30
        try:
            settings, msgs = validate(settings_from(cfg), train_count, val_count, device_count=gpus, vram_gib=vram)
        except SettingsError as exc:
            raise UserError(str(exc)) from None
        from omegaconf import OmegaConf

        m = cfg.model
        defaults = OmegaConf.load(CONF / "model" / "tortoise.yaml")
        # a step setting given on the command line or by a preset (debug=smoke, experiment=...) wins over the
        # epoch-based plan; the batch and its chunks always come from the rules
        given = {k for k in STEP_KEYS if OmegaConf.select(cfg, k) != OmegaConf.select(defaults, k)}
        if m.get("save_every_epochs") is None:
            given.add("trainer.every_n_train_steps")
        if m.get("validate_every_epochs") is None:
            given.add("trainer.val_check_interval")
        for key, value in overrides(settings, plan(settings, train_count, val_count)).items():
            if key in given or (key == "precision.name" and str(cfg.precision.name) == "32"):
                continue
            section, _, leaf = key.partition(".")
            cfg[section][leaf] = value
        return msgs[:-1] + [f"AIVC's plan: {msgs[-1]}"]

    def validate(self, cfg) -> list[str]:
        from audiotrain.models.presets import preset_problems
        from audiotrain_tortoise.presets import COND_RESIDUALS, PRESETS

        m = cfg.model
        problems = preset_problems(m.get("preset"), PRESETS)
        cleaner = m.get("text_cleaner")
        if cleaner is not None and str(cleaner) not in ("english", "basic"):
            problems.append(f"model.text_cleaner={cleaner} must be english (TorToiSe's english_cleaners: numbers and "
                            f"abbreviations spelled out), basic (lowercase, spaces) or null (DLAS's choice from the "
                            f"tokenizer.json).")
        if str(m.get("cond_residual", "tortoise")) not in COND_RESIDUALS:
            problems.append(f"model.cond_residual={m.get('cond_residual')} must be tortoise (the form TorToiSe plays "
                            f"with) or dlas (to continue a DLAS run exactly).")
        if str(m.get("stop_at", "aivc")) not in ("aivc", "dlas"):
            problems.append(f"model.stop_at={m.get('stop_at')} must be aivc (the steps AIVC's plan counts) or dlas "
                            f"(what DLAS's epoch loop trains: one epoch more, the last partial batch dropped).")
        files = {"checkpoint": "TorToiSe's autoregressive.pth or a <step>_gpt.pth", "dvae_path": "dvae.pth",
                 "mel_norms_path": "mel_norms.pth", "tokenizer_path": "TorToiSe's tokenizer.json"}
        for key, what in files.items():
            value = m.get(key)
            if value and not Path(str(value)).expanduser().is_file():
                problems.append(f"model.{key}={value} is not a file: give {what}.")
        if str(m.get("preset")) == "release" and not m.get("dvae_path"):
            problems.append("model.preset=release reads its mel codes with TorToiSe's DVAE: give model.dvae_path=dvae.pth "
                            "(and model.mel_norms_path=mel_norms.pth, model.tokenizer_path=tokenizer.json), or use "
                            "model.preset=tiny.")
        for key in ("mel_loss_weight", "text_loss_weight"):
            v = m.get(key)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
                problems.append(f"model.{key}={v} must be a number >= 0 (AIVC: mel 1.0, text 0.01).")
        for key in ("save_every_epochs", "validate_every_epochs"):
            v = m.get(key)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                problems.append(f"model.{key}={v} must be a whole number of epochs >= 1 (AIVC: 5), or null to use "
                                f"the trainer's step setting.")
        return problems

    def save_weights_native(self, root, settings, directory, step):
        """``<step>_gpt.pth``: the whole UnifiedVoice (a LoRA merged in), the file TorToiSe and AIVC load."""
        from audiotrain_tortoise.checkpoint import save_gpt
        from audiotrain_tortoise.merge import merged_model

        return save_gpt(merged_model(root, settings), directory, step)

    def save_merged(self, backbone, cfg, directory):
        from audiotrain_tortoise.checkpoint import save_gpt

        return save_gpt(backbone.adapter_root(), directory, 0)


    # ---- audiotrain generate --------------------------------------------------------------------------
    generate_text_field = "text"

    def generate_options(self, parser):
        parser.add_argument("--text", default="Hello, this is my voice.", help="what to say (default: %(default)s)")
        parser.add_argument("--reference", nargs="+", default=None, metavar="WAV",
                            help="one or more clips of the voice (wav/flac/mp3); their conditioning latents are "
                                 "averaged, as TorToiSe does")
        parser.add_argument("--max-codes", type=int, default=None,
                            help="the most mel codes the AR may make (1 code = 46 ms; default model.sample_max_codes)")
        parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature, 0 = greedy")

    def _references(self, cfg, request):
        """The reference clips' mels (one sentence when a clip is unusable)."""
        import torch

        from audiotrain.errors import UserError
        from audiotrain_tortoise.features import PADDED_SAMPLES

        refs = request.get("reference")
        if not refs:
            raise UserError("--reference is missing: give one or more clips of the voice, e.g. --reference me.wav.")
        from audiotrain.cli.reference_clip import load_reference

        return [torch.from_numpy(load_reference(ref, "--reference", self.sample_rate, PADDED_SAMPLES / self.sample_rate,
                                                "the voice speaking")[0])
                for ref in ([refs] if isinstance(refs, str) else list(refs))]

    def generate_check(self, cfg, request):
        from audiotrain.errors import UserError

        if not str(request.get("text") or "").strip():
            raise UserError("--text is empty: give the words to speak, e.g. --text \"Hello there.\".")
        codes, temp = request.get("max_codes"), request.get("temperature")
        if codes is not None and (not isinstance(codes, int) or isinstance(codes, bool) or codes < 1):
            raise UserError(f"--max-codes {codes} must be a whole number >= 1 (250 codes = 11.6 s).")
        if temp is not None and (not isinstance(temp, (int, float)) or isinstance(temp, bool) or temp < 0):
            raise UserError(f"--temperature {temp} must be a number >= 0 (0 = greedy).")
        self._references(cfg, request)
        from audiotrain_tortoise.features import tokenizer_of

        unknown = tokenizer_of(cfg).unknown_characters(str(request["text"]))
        if unknown:
            raise UserError(f"--text has characters the tokenizer cannot spell ({' '.join(repr(c) for c in unknown)}): "
                            f"write them as words.")

    def generate(self, model, cfg, request, seed, *, progress=None):
        """Speech preview: the text's BPE ids after the references' averaged conditioning latents → the AR's mel
        codes → the DVAE's mel → Griffin-Lim at 22,050 Hz (TorToiSe's diffusion decoder and vocoder make the
        real audio from the same codes)."""
        import torch

        backbone = model.backbone
        text_enc = next(e for e in model.encoders if e.name == "text")
        ids = text_enc.encode({"text": str(request["text"])})["text_ids"]
        front = backbone.front_end()
        mels = [front.mel(w[None]) for w in self._references(cfg, request)]
        uv = backbone.model
        dev = next(uv.parameters()).device
        latents = torch.stack([uv.conditioning_latents(m[:, None].to(dev))[0] for m in mels]).mean(0)
        temp = float(request.get("temperature") if request.get("temperature") is not None else 1.0)
        gen = torch.Generator(device=dev).manual_seed(int(seed))
        codes = uv.sample(ids.to(dev), latents, max_codes=request.get("max_codes") or backbone.sample_max_codes,
                          temperature=temp, greedy=temp == 0, generator=gen)[0]
        if progress is not None:
            progress(1, 1)
        wave, sr = backbone._waves([codes.cpu()])
        return wave[0], sr


PLUGIN = TortoisePlugin()
