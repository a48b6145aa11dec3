"""The SongGen plugin object registered under the ``audiotrain.plugins`` entry point.

Streams: ``mix`` (the song, required), ``vocal`` and ``acc`` (its stems, optional: mixed_pro's vocal loss reads
the vocal stem; the dual-track patterns need both), each 16 kHz mono for X-Codec. Frozen encoders: X-Codec per
stream (``codes_<role>``), the description's T5 states (``text``), the lyrics ids (``lyrics``).
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
        return {("model", "songgen"): CONF / "model" / "songgen.yaml"}

    def example_data(self, directory, count: int = 4):
        from audiotrain_songgen.example_data import write_song_folder

        return write_song_folder(Path(directory), count)

    def readers(self):
        from audiotrain_songgen.readers import SongFolder, SongMetadata

        return [SongMetadata(), SongFolder()]

    def audio_streams(self, cfg):
        from audiotrain.data.audio_io import StreamSpec

        d = cfg.dataset
        spec = dict(sample_rate=SAMPLE_RATE, channels=1, min_duration=float(d.min_duration),
                    max_duration=float(d.max_duration), silence_threshold=float(d.silence_threshold))
        return {role: StreamSpec(**spec, required=role == "mix") for role in STREAM_ROLES}

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

        return collate(items, self._pattern, vocal_labels=self._vocal)

    _pattern = "mixed_pro"
    _vocal = True

    def _remember(self, cfg) -> None:
        mc = self.model_config(cfg)
        self._pattern = str(mc["decoder"]["track_pattern"])
        self._vocal = bool(mc["decoder"]["add_vocal_loss"])

    def filter_items(self, items, cfg, report):
        """Dual-track patterns train on the stems: a song without both is reported and skipped."""
        self._remember(cfg)
        from audiotrain_songgen.patterns import DUAL_TRACK

        if self._pattern not in DUAL_TRACK:
            return items
        kept = []
        for it in items:
            missing = [r for r in ("acc", "vocal") if r not in it.row.get("audio", {})]
            if missing:
                report.add(it.row["audio"]["mix"], f"no {' or '.join(missing)} stem: model.track_pattern="
                                                   f"{self._pattern} trains on the accompaniment and vocal stems "
                                                   f"(X_acc.wav, X_vocal.wav)")
            else:
                kept.append(it)
        return kept

    def prepare_example(self, row, rng):
        return {"key": row["key"], "caption": str(row.get("caption", "")), "lyrics": str(row.get("lyrics", ""))}

    def describe_example(self, row):
        return f"DESCRIPTION: {row.get('caption', '')}\n\nLYRICS:\n\n{row.get('lyrics', '')}"

    def validate(self, cfg) -> list[str]:
        from audiotrain_songgen.validate import problems

        return problems(cfg, self)

    def save_merged(self, backbone, cfg, directory):
        """The merged composite in SongGen's layout: config.json + model.safetensors (its from_pretrained reads it)."""
        from audiotrain_songgen.checkpoint import save_folder

        return save_folder(backbone.model, directory)


PLUGIN = SongGenPlugin()
