"""The VALL-E plugin object registered under the ``audiotrain.plugins`` entry point."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from audiotrain.plugins.base import Plugin

CONF = Path(__file__).resolve().parent / "conf"


class VALLEPlugin(Plugin):
    name = "valle"
    sample_rate = 24000
    channels = 1
    group_field = "speaker"  # acoustic prompts come from another utterance of the same speaker

    def __init__(self) -> None:
        self._lang = 0

    def config_options(self):
        return {("model", "valle"): CONF / "model" / "valle.yaml", ("lora", "valle"): CONF / "lora" / "valle.yaml"}

    released_presets = {"full": "valle_ar_nar_full"}

    def example_data(self, directory, count: int = 4):
        from audiotrain_valle.example_data import write_voice_folder

        return write_voice_folder(directory, count)

    def readers(self):
        from audiotrain_valle.readers import LJSpeechList, VoiceFolder

        return [LJSpeechList(language=None), VoiceFolder(language=None)]

    def _remember(self, cfg) -> None:
        from audiotrain_valle.collate import lang_id
        from audiotrain_valle.presets import resolve_config

        self._lang = lang_id(str(cfg.model.language), int(resolve_config(self._model_config(cfg))["langs"]))

    def _model_config(self, cfg):
        """What the model is built from: model.config= (a vall-e YAML), else the config model.weights= carries,
        else model.preset (so the language check reads the language table of the model that is trained)."""
        original = self._original_config(cfg)
        if original is None and cfg.model.get("weights"):
            from audiotrain_valle.checkpoint import embedded_config

            original = embedded_config(cfg.model.weights, trust_pickle=bool(cfg.get("trust_pickle", False)))
        return original if original is not None else str(cfg.model.preset)

    def build_encoders(self, cfg):
        from audiotrain_valle.encoders import build_encoders, weights_path

        self._remember(cfg)
        symmap = None
        if weights_path(cfg) is not None:  # fine-tuning a released model: use its phoneme ids
            from audiotrain_valle.checkpoint import read_exported
            from audiotrain_valle.phonemes import Symmap

            stored = (read_exported(weights_path(cfg), bool(cfg.get("trust_pickle", False)))[2] or {}).get("symmap")
            symmap = Symmap.from_dict(stored) if stored else None
        return build_encoders(cfg, symmap)

    def build_backbone(self, cfg, *, device: str = "cpu"):
        from audiotrain.models.presets import seeded
        from audiotrain_valle.ar_nar import ARNAR
        from audiotrain_valle.backbone import VALLEBackbone
        from audiotrain_valle.encoders import codec_factory, weights_path

        settings = dict(cfg.model)
        if device == "meta":
            return VALLEBackbone(ARNAR(str(cfg.model.preset)), settings)
        self._remember(cfg)
        path = weights_path(cfg)
        if path is not None:
            from audiotrain_valle.checkpoint import load_exported

            model, _, embedded = load_exported(path, config=self._original_config(cfg),
                                               trust_pickle=bool(cfg.get("trust_pickle", False)),
                                               preset=str(cfg.model.preset))
            model.train()
            if (embedded or {}).get("loss_factors") and str(cfg.model.get("ar_loss", "sequence")) == "sequence":
                from audiotrain.train.console import console

                console.print(f"[yellow]Note:[/] {path.name} was trained with vall-e's per-segment loss "
                              f"(loss_factors): add model.ar_loss=segment to continue with it.", highlight=False)
        else:
            model = seeded(lambda: ARNAR(self._original_config(cfg) or str(cfg.model.preset)))
        _, make_codec = codec_factory(cfg)
        return VALLEBackbone(model, settings, codec_factory=make_codec)

    @staticmethod
    def _original_config(cfg):
        """``model.config=`` (a vall-e YAML) read as the model's config, or None."""
        if not cfg.model.get("config"):
            return None
        from audiotrain_valle.original_config import read_original_config

        return read_original_config(cfg.model.config)

    def collate(self, items: Sequence[Mapping[str, Any]]):
        from audiotrain_valle.collate import collate

        return collate(items, self._lang)

    def conditioning_clips(self, cfg):
        """The acoustic prompt: the first uniform(model.prompt_duration_range) seconds of the codes of another
        utterance of the same speaker (of the utterance itself when the speaker has no other), as upstream."""
        from audiotrain.data.clips import ClipSpec

        from audiotrain_valle.encoders import codec_frame_rate

        lo, hi = (float(x) for x in cfg.model.prompt_duration_range)
        return [ClipSpec("prompt", count=1, seconds=(lo, hi), source="same_group",
                         features={"codes": (codec_frame_rate(cfg), 0)}, start="beginning", pad=False)]

    def filter_items(self, items, cfg, report):
        lo, hi = (float(x) for x in cfg.model.duration_range)
        kept = []
        for it in items:
            if not lo <= it.duration <= hi:
                report.add(it.audio_path, f"{it.duration:.1f} s is outside model.duration_range [{lo:g}, {hi:g}] s")
            else:
                kept.append(it)
        counts: dict[str, int] = {}
        for it in kept:
            counts[it.row.get("speaker", "")] = counts.get(it.row.get("speaker", ""), 0) + 1
        need = int(cfg.model.min_utterances)
        out = []
        for it in kept:
            spk = it.row.get("speaker", "")
            if counts[spk] < need:
                report.add(it.audio_path, f"speaker '{spk}' has {counts[spk]} usable utterance(s); VALL-E needs "
                                                 f"{need} (prompts come from another utterance of the same speaker)")
            else:
                out.append(it)
        return out

    def describe_example(self, row):
        return f"TRANSCRIPT: {row.get('text', '')}\n\nSPEAKER: {row.get('speaker', '')}"

    def validate(self, cfg) -> list[str]:
        from audiotrain.models.presets import preset_problems
        from audiotrain_valle.presets import PRESETS

        m = cfg.model
        problems = preset_problems(m.get("preset"), PRESETS)
        if not problems and str(m.get("preset")) != "tiny" and not m.codec.get("path"):
            problems.append(f"model.preset={m.get('preset')} needs the EnCodec 24 kHz weights: pass model.codec.path=DIR "
                            "(a local facebook/encodec_24khz folder), or use model.preset=tiny.")
        original = None
        if m.get("config"):
            from audiotrain.errors import UserError

            try:
                original = self._original_config(cfg)
            except UserError as exc:
                problems.append(str(exc))
        if not problems:
            from audiotrain_valle.collate import lang_problem
            from audiotrain_valle.presets import resolve_config

            langs = int(resolve_config(original if original is not None else self._model_config(cfg))["langs"])
            lang = lang_problem(str(m.get("language")), langs)
            if lang is not None:
                problems.append(lang)
        if str(m.get("ar_loss", "sequence")) not in ("sequence", "segment"):
            problems.append(f"model.ar_loss={m.get('ar_loss')} must be sequence (the default: the AR also predicts "
                            f"the first code from the sep before it) or segment (vall-e's per-segment loss, as its "
                            f"released config trains with loss_factors).")
        lo, hi = (float(x) for x in m.prompt_duration_range)
        if not 0 < lo <= hi:
            problems.append(f"model.prompt_duration_range=[{lo:g}, {hi:g}] must be 0 < min <= max seconds.")
        if m.get("weights"):
            from audiotrain.safe_files import BadFileError, check_file

            from audiotrain_valle.checkpoint import EXPECTED

            try:
                check_file(m.weights, option="model.weights", expected=EXPECTED)
            except BadFileError as exc:
                problems.append(str(exc))
        from audiotrain_valle.encoders import tokenizer_problems

        return problems + tokenizer_problems(cfg)

    def native_adapter_format(self):
        from audiotrain_valle.adapter_format import FORMAT

        return FORMAT

    def save_merged(self, backbone, cfg, directory):
        from audiotrain_valle.checkpoint import save_merged

        return save_merged(backbone, cfg, directory)

    # ---- audiotrain generate ------------------------------------------------------------------
    generate_text_field = "text"

    def generate_options(self, parser):
        parser.add_argument("--text", default="Hello, this is my voice.", help="what to say (default: %(default)s)")
        parser.add_argument("--reference", default=None, metavar="WAV",
                            help="a clip of the voice to speak in (wav/flac/mp3; its first --prompt-seconds are used)")
        parser.add_argument("--prompt-seconds", type=float, default=None,
                            help="seconds of the reference used as the acoustic prompt (default: the longest of "
                                 "model.prompt_duration_range, as in training)")
        parser.add_argument("--max-seconds", type=float, default=10.0,
                            help="the longest speech the AR stage may make (default 10)")
        parser.add_argument("--ar-temperature", type=float, default=None,
                            help="sampling temperature of the AR stage (default: model.eval_ar_temperature)")
        parser.add_argument("--nar-temperature", type=float, default=None,
                            help="sampling temperature of the NAR stage (default: model.eval_nar_temperature)")

    def _reference(self, cfg, request):
        """The reference clip, mono at 24 kHz, cut to the prompt length (one sentence when it is unusable)."""
        from audiotrain.errors import UserError

        ref = request.get("reference")
        if not ref:
            raise UserError("--reference is missing: give a clip of the voice to speak in, e.g. --reference me.wav.")
        seconds = request.get("prompt_seconds") or max(float(x) for x in cfg.model.prompt_duration_range)
        from audiotrain.cli.reference_clip import load_reference

        return load_reference(ref, "--reference", self.sample_rate, float(seconds), "someone speaking")

    def generate_check(self, cfg, request):
        from audiotrain.errors import UserError

        if not str(request.get("text") or "").strip():
            raise UserError("--text is empty: give the words to speak, e.g. --text \"Hello there.\".")
        for key in ("max_seconds", "prompt_seconds", "ar_temperature", "nar_temperature"):
            v = request.get(key)
            if v is not None and (not isinstance(v, (int, float)) or v < 0 or (key.endswith("seconds") and v == 0)):
                raise UserError(f"--{key.replace('_', '-')} {v} is not a positive number: pass e.g. 10 or 0.5.")
        self._reference(cfg, request)

    def generate(self, model, cfg, request, seed, *, progress=None):
        """Speech: the text's phonemes and the reference clip's codes (the acoustic prompt) → AR level 0 until the
        stop token (at most ``max_seconds``), the NAR levels, decoded by the codec (24 kHz mono)."""
        import torch

        backbone = model.backbone
        self._remember(cfg)
        example = {"text": str(request["text"]), "language": None}
        codec_enc, phon_enc = (next(e for e in model.encoders if e.name == n) for n in ("codes", "phonemes"))
        phns = phon_enc.encode(example)["phns"]
        audio = self._reference(cfg, request)
        prom = codec_enc.encode({"audio": torch.from_numpy(audio)})["codes"].long()
        codec = backbone.codec()
        max_steps = max(1, round(float(request.get("max_seconds") or 10.0) * codec.frame_rate))
        arnar = backbone.model
        total = max_steps + arnar.n_levels - 1
        calls = [0]

        def counted(*args, **kwargs):  # one call per AR step and per NAR level: the progress bar
            calls[0] += 1
            if progress is not None:
                progress(min(calls[0], total), total)
            return type(arnar)._logits(arnar, *args, **kwargs)

        ar_t = request.get("ar_temperature")
        nar_t = request.get("nar_temperature")
        arnar._logits = counted
        try:
            codes = arnar.generate(phns, prom, lang=self._lang, max_ar_steps=max_steps,
                                   ar_temperature=backbone.ar_temperature if ar_t is None else float(ar_t),
                                   nar_temperature=backbone.nar_temperature if nar_t is None else float(nar_t),
                                   generator=torch.Generator().manual_seed(int(seed)))
        finally:
            del arnar._logits
        if progress is not None:
            progress(total, total)
        if codes.shape[0] == 0:
            from audiotrain.errors import UserError

            raise UserError(f"The model stopped before saying anything for --text {request['text']!r} (seed {seed}): "
                            f"try another --seed or a longer-trained adapter.")
        wav = codec.decode(codes.cpu())
        return wav.reshape(1, -1), int(codec.sample_rate)


PLUGIN = VALLEPlugin()
