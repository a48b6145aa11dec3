"""The SongGen plugin object registered under the ``audiotrain.plugins`` entry point.

Streams: ``mix`` (the song, required), ``vocal`` and ``acc`` (its stems, optional: mixed_pro's vocal loss reads
the vocal stem; the dual-track patterns need both), each 16 kHz mono for X-Codec; with the voice prompt on
(``model.voice``), ``voice``: the vocal stem again at 24 kHz mono for MERT. Frozen encoders: X-Codec per stream
(``codes_<role>``), the description's T5 states (``text``), the lyrics ids (``lyrics``), MERT's states of a few
crops of the vocal stem (``voice``, ``voice.py``; a step picks one, or drops the voice, in ``choose_variant``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from audiotrain.plugins.base import Plugin

CONF = Path(__file__).resolve().parent / "conf"
SAMPLE_RATE = 16000
STREAM_ROLES = ("mix", "vocal", "acc")


class SongGenPlugin(Plugin):
    name = "songgen"
    sample_rate = SAMPLE_RATE
    channels = 1
    released_presets = {"mixed_pro": "songgen_mixed_pro_composite_partial"}
    #: SongGen has no LoRA file of its own; its model is a transformers PreTrainedModel with our module names, so
    #: PeftModel.from_pretrained(SongGenMixedForConditionalGeneration.from_pretrained(...), RUN/adapters/final/peft)
    #: loads audiotrain's PEFT folder as it is
    peft_is_native = True

    def config_options(self):
        stages = sorted((CONF / "experiment" / "songgen").glob("*/*.yaml"))  # experiment=songgen/<mode>/<stage>
        return {("model", "songgen"): CONF / "model" / "songgen.yaml",
                **{(f"experiment/songgen/{p.parent.name}", p.stem): p for p in stages}}

    def example_data(self, directory, count: int = 4):
        from audiotrain_songgen.example_data import write_song_folder

        return write_song_folder(Path(directory), count)

    def commands(self):
        from audiotrain_songgen.preprocess import preprocess

        return {"songgen-preprocess": preprocess}

    def readers(self):
        from audiotrain_songgen.preprocessed import SongGenDataset
        from audiotrain_songgen.readers import SongFolder, SongMetadata

        return [SongGenDataset(), SongMetadata(), SongFolder()]

    def audio_streams(self, cfg):
        from audiotrain.data.audio_io import StreamSpec
        from audiotrain_songgen import voice

        d = cfg.dataset
        spec = dict(sample_rate=SAMPLE_RATE, channels=1, min_duration=float(d.min_duration),
                    max_duration=float(d.max_duration), silence_threshold=float(d.silence_threshold))
        streams = {role: StreamSpec(**spec, required=role == "mix") for role in STREAM_ROLES}
        if voice.voice_on(cfg):  # MERT's input: the vocal stem's file, decoded at 24 kHz
            from audiotrain_songgen.mert import SAMPLE_RATE as MERT_RATE

            streams[voice.STREAM] = StreamSpec(**{**spec, "sample_rate": MERT_RATE}, required=False,
                                               source=voice.SOURCE)
        return streams

    # ---- model settings every part reads ---------------------------------------------------------------
    @staticmethod
    def model_config(cfg) -> dict:
        """The composite's resolved config: the preset (or the checkpoint folder's config.json) with the run's
        track pattern and vocal loss."""
        from audiotrain_songgen.presets import resolve_config

        m = cfg.model
        if m.get("checkpoint_dir"):
            from audiotrain.safe_files import read_json
            from audiotrain_songgen.checkpoint import EXPECTED, preset_from_config_json

            folder = Path(str(m.checkpoint_dir)).expanduser()
            base = preset_from_config_json(read_json(folder / "config.json", option="model.checkpoint_dir",
                                                     expected=EXPECTED), source=str(folder / "config.json"))
        else:
            base = str(m.preset)
        resolved = resolve_config(base)
        dec = {}
        if m.get("track_pattern"):
            dec["track_pattern"] = str(m.track_pattern)
        pattern = dec.get("track_pattern", resolved["decoder"]["track_pattern"])
        vocal = m.get("add_vocal_loss")
        dec["add_vocal_loss"] = bool(pattern == "mixed_pro" if vocal is None else vocal) and pattern == "mixed_pro"
        return resolve_config(resolved, {"decoder": dec})

    def build_encoders(self, cfg):
        from audiotrain_songgen.encoders import build_encoders

        self._remember(cfg)
        return build_encoders(cfg, self.model_config(cfg))

    def build_backbone(self, cfg, *, device: str = "cpu"):
        from audiotrain_songgen.encoders import build_backbone

        self._remember(cfg)
        return build_backbone(cfg, self.model_config(cfg), device=device)

    def collate(self, items: Sequence[Mapping[str, Any]]):
        from audiotrain_songgen.collate import collate

        return collate(items, self._pattern, vocal_labels=self._vocal, voice=self._voice_layout)

    def choose_variant(self, features, rng):
        """The voice of this step: one of the cached crops, or none (``model.voice_choices``); no rng: crop 0."""
        from audiotrain_songgen.voice import choose

        return choose(features, rng, self._voice_choices)

    _pattern = "mixed_pro"
    _vocal = True
    _voice_layout: tuple[int, int, int] | None = None
    _voice_choices: tuple[str, ...] = ("mert_input",)

    def _remember(self, cfg) -> None:
        from audiotrain_songgen.voice import voice_choices, voice_layout

        mc = self.model_config(cfg)
        self._pattern = str(mc["decoder"]["track_pattern"])
        self._vocal = bool(mc["decoder"]["add_vocal_loss"])
        self._voice_layout = voice_layout(cfg, mc)
        self._voice_choices = tuple(voice_choices(cfg))

    def filter_items(self, items, cfg, report):
        """Dual-track patterns train on the stems: a song without both is reported and skipped."""
        self._remember(cfg)
        from audiotrain_songgen.patterns import DUAL_TRACK

        if self._pattern not in DUAL_TRACK:
            return items
        kept = []
        for it in items:
            given = it.row.get("given") or {}
            missing = [r for r in ("acc", "vocal") if r not in it.row.get("audio", {}) and f"codes_{r}" not in given]
            if missing:
                report.add(it.audio_path or f"row {it.row['key']}", f"no {' or '.join(missing)} stem: model.track_pattern="
                                                   f"{self._pattern} trains on the accompaniment and vocal stems "
                                                   f"(X_acc.wav, X_vocal.wav)")
            else:
                kept.append(it)
        return kept

    def prepare_example(self, row, rng):
        out = {"key": row["key"], "caption": str(row.get("caption", "")), "lyrics": str(row.get("lyrics", ""))}
        if row.get("t5_ids"):  # a preprocessed dataset's caption, as flan-t5 ids (preprocessed.py)
            out["t5_ids"] = list(row["t5_ids"])
        return out

    def describe_example(self, row):
        if row.get("t5_ids") and not row.get("caption"):
            return (f"DESCRIPTION: ({len(row['t5_ids'])} flan-t5 token ids from a preprocessed dataset)\n\n"
                    f"LYRICS: (VoiceBpe ids from a preprocessed dataset)")
        return f"DESCRIPTION: {row.get('caption', '')}\n\nLYRICS:\n\n{row.get('lyrics', '')}"

    def audio_metrics(self, cfg):
        """``eval/clap`` (caption–audio similarity) when ``model.clap_path`` names a local CLAP folder."""
        path = cfg.model.get("clap_path")
        if not path:
            return []
        from audiotrain_songgen.clap import ClapScore

        return [ClapScore(path, trust_pickle=bool(cfg.get("trust_pickle", False)))]

    def validate(self, cfg) -> list[str]:
        from audiotrain_songgen.validate import problems

        return problems(cfg, self)

    def save_merged(self, backbone, cfg, directory):
        """The merged composite in SongGen's layout: config.json + model.safetensors (its from_pretrained reads it)."""
        from audiotrain_songgen.checkpoint import save_folder

        return save_folder(backbone.model, directory)

    # ---- audiotrain generate (generate.py) -------------------------------------------------------------
    generate_text_field = "description"

    def generate_options(self, parser):
        parser.add_argument("--description", default="A bright pop song with a female vocal, piano, bass and drums.",
                            help="the text prompt: what the song sounds like (default: %(default)s)")
        parser.add_argument("--lyrics", default="",
                            help="the lyrics as text, or @FILE to read them from a UTF-8 file (default: none, "
                                 "an instrumental prompt)")
        parser.add_argument("--duration", type=float, default=None,
                            help="the longest song in seconds, at 50 frames/s (default: model.max_new_frames; the "
                                 "model's EOS may end it earlier)")
        parser.add_argument("--temperature", type=float, default=None,
                            help="sampling temperature, 0 = greedy (default: model.temperature)")
        parser.add_argument("--voice", default=None, metavar="WAV",
                            help="a reference voice (a vocal, ideally without accompaniment): its first 3 s at 24 kHz "
                                 "through MERT, as SongGen's processor takes it (default: no voice)")

    def _voice(self, cfg, request):
        """``--voice``'s first 3 s, mono at 24 kHz (one sentence when the file is unusable), or None."""
        from audiotrain.errors import UserError
        from audiotrain_songgen.voice import voice_on

        path = request.get("voice")
        if not path:
            return None
        if not voice_on(cfg):
            raise UserError(f"--voice {path}: this model was trained without a voice prompt (model.voice=false); "
                            f"leave --voice out.")
        from audiotrain.cli.reference_clip import load_reference

        return load_reference(path, "--voice", 24000, 3.0, "someone singing")

    @staticmethod
    def voice_conditions(encoders, voice, device) -> dict:
        """``--voice``'s clip (``(1, N)`` float32 at 24 kHz, or None) as the memory's first part: ``mert_hidden``
        ``[1, T, 25, H]`` and ``voice_mask`` ``[1, T]`` (all False for a silent clip); ``{}`` without a voice."""
        if voice is None:
            return {}
        import torch

        states = encoders["voice"].encode({"audio": torch.from_numpy(voice), "audio_length": voice.shape[-1],
                                           "key": "generate"})
        hidden, voiced = states["mert_hidden"][0], bool(states["mert_voiced"][0])
        return {"mert_hidden": hidden[None].float().to(device),
                "voice_mask": torch.full((1, hidden.shape[0]), voiced, dtype=torch.bool, device=device)}

    @staticmethod
    def _lyrics_text(request) -> str:
        """``--lyrics`` as text: ``@FILE`` read from the file (one sentence when it cannot be read)."""
        from audiotrain.cli.text_input import text_or_file

        return text_or_file(request.get("lyrics"), "--lyrics") or ""

    def _frame_limit(self, cfg) -> tuple[int, str]:
        """The most frames a generation may have, and why (model.max_new_frames or the decoder's positions)."""
        from audiotrain_songgen.generate import max_frames_for

        dec = self.model_config(cfg)["decoder"]
        fit = max_frames_for(int(dec["max_position_embeddings"]), int(dec["num_codebooks"]), str(dec["track_pattern"]))
        cap = int(cfg.model.get("max_new_frames", 1500))
        if cap <= fit:
            return cap, f"model.max_new_frames={cap}"
        return fit, (f"the model's {int(dec['max_position_embeddings'])} decoder positions under "
                     f"{dec['track_pattern']}")

    def _frames(self, cfg, request) -> int:
        from audiotrain_songgen.codec import FRAME_RATE

        limit, _ = self._frame_limit(cfg)
        duration = request.get("duration")
        return limit if duration is None else max(1, round(float(duration) * FRAME_RATE))

    def generate_check(self, cfg, request):
        from audiotrain.errors import UserError
        from audiotrain_songgen.codec import FRAME_RATE

        description = request.get("description")
        if not isinstance(description, str) or not description.strip():
            raise UserError("--description is empty: describe the song, e.g. --description \"A calm piano ballad "
                            "with a male vocal.\".")
        self._lyrics_text(request)
        self._voice(cfg, request)
        duration, temperature = request.get("duration"), request.get("temperature")
        if duration is not None:
            if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not duration > 0:
                raise UserError(f"--duration {duration} is not a positive number of seconds: pass e.g. --duration 10.")
            limit, why = self._frame_limit(cfg)
            if round(float(duration) * FRAME_RATE) > limit:
                raise UserError(f"--duration {duration:g} is longer than the {limit / FRAME_RATE:g} s this model may "
                                f"generate ({why}, at {FRAME_RATE} frames/s): pass at most --duration "
                                f"{limit / FRAME_RATE:g}.")
        if temperature is not None and (isinstance(temperature, bool) or not isinstance(temperature, (int, float))
                                        or not temperature >= 0):
            raise UserError(f"--temperature {temperature} is not a number >= 0: pass e.g. --temperature 1 (0 = greedy).")

    def generate(self, model, cfg, request, seed, *, progress=None):
        """A song: the description (T5), the lyrics (VoiceBpe) and ``--voice`` (MERT) as the cross-attention memory;
        tokens sampled (``generate.sample``) for at most ``--duration`` seconds, stripped of the pattern and X-Codec
        decoded: ``(1, samples)`` at 16 kHz; for a dual-track pattern ``{"mix", "acc", "vocal"}`` (the mix is the
        prompt's wav, the accompaniment and the vocals are written beside it)."""
        import torch

        from audiotrain_songgen.generate import SAMPLE_RATE, conditions_of, to_audio

        self._remember(cfg)
        backbone = model.backbone
        encoders = {e.name: e for e in model.encoders}
        text = encoders["text"].encode({"caption": str(request["description"]).strip()})
        lyrics = encoders["lyrics"].encode({"lyrics": self._lyrics_text(request)})
        device = next(backbone.parameters()).device
        conditions = {k: v.to(device) for k, v in conditions_of(text["text_hidden"], text["text_mask"],
                                                                lyrics["lyrics_ids"]).items()}
        conditions.update(self.voice_conditions(encoders, self._voice(cfg, request), device))
        temperature = request.get("temperature")
        tokens = backbone.generate_tokens(conditions, seed=int(seed), max_frames=self._frames(cfg, request),
                                          temperature=None if temperature is None else float(temperature),
                                          progress=progress)
        waves = to_audio(tokens[0], backbone.pattern, backbone.codec())
        if len(waves) == 1:
            return waves["mix"].clamp(-1.0, 1.0), SAMPLE_RATE
        return {t: waves[t].clamp(-1.0, 1.0) for t in ("mix", "acc", "vocal")}, SAMPLE_RATE


PLUGIN = SongGenPlugin()
