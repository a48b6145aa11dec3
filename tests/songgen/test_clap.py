"""``eval/clap``: the caption–audio CLAP similarity from a local folder (a tiny CLAP the test writes), the same
value as computing it by hand, reproducible, skipped for rows without a caption, and logged by the audio
evaluation of a run (``trainer.eval_audio=true model.clap_path=DIR``)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch


def write_tiny_clap(folder: Path) -> Path:
    """A random CLAP (text and audio towers of a few thousand weights) with its processor, saved as transformers
    saves laion/larger_clap_music_and_speech."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor, RobertaTokenizerFast
    from transformers.models.clap.configuration_clap import ClapAudioConfig, ClapTextConfig

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(["a calm piano ballad", "a bright pop song with drums"], vocab_size=300, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tok = RobertaTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                               unk_token="<unk>", mask_token="<mask>", sep_token="</s>", cls_token="<s>")
    text = ClapTextConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=32, max_position_embeddings=64, projection_dim=8, pad_token_id=1)
    audio = ClapAudioConfig(hidden_size=128, depths=[1, 1, 1, 1], num_attention_heads=[1, 1, 1, 1],
                            patch_embeds_hidden_size=16, window_size=8, spec_size=256, num_mel_bins=64,
                            projection_dim=8, enable_fusion=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = ClapModel(ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=8))
    fe = ClapFeatureExtractor(feature_size=64, sampling_rate=48000, max_length_s=2, truncation="rand_trunc",
                              padding="repeatpad")
    model.save_pretrained(str(folder))
    ClapProcessor(feature_extractor=fe, tokenizer=tok).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def clap_dir(tmp_path_factory) -> Path:
    return write_tiny_clap(tmp_path_factory.mktemp("clap") / "clap")


def test_the_score_is_the_cosine_of_the_two_embeddings(clap_dir):
    import soxr
    from transformers import ClapModel, ClapProcessor

    from audiotrain_songgen.clap import ClapScore

    t = np.arange(3 * 16000) / 16000
    song = torch.tensor(0.3 * np.sin(2 * np.pi * 440 * t), dtype=torch.float32)[None]  # 3 s: longer than the window
    metric = ClapScore(clap_dir)
    a = metric.score(song, 16000, {"caption": "a calm piano ballad"})
    assert a == metric.score(song, 16000, {"caption": "a calm piano ballad"})  # the crop is seeded
    assert -1.0 <= a <= 1.0
    assert metric.score(song, 16000, {"caption": "a bright pop song with drums"}) != a
    assert metric.score(song, 16000, {"caption": ""}) is None and metric.score(song, 16000, {}) is None
    # by hand
    model = ClapModel.from_pretrained(str(clap_dir), local_files_only=True).eval()
    proc = ClapProcessor.from_pretrained(str(clap_dir), local_files_only=True)
    wave = soxr.resample(song[0].numpy().astype(np.float64), 16000, 48000).astype(np.float32)
    np.random.seed(0)
    x = proc(text=["a calm piano ballad"], audio=[wave], sampling_rate=48000, return_tensors="pt", padding=True)
    with torch.no_grad():
        te = model.get_text_features(input_ids=x["input_ids"], attention_mask=x["attention_mask"])
        ae = model.get_audio_features(input_features=x["input_features"], is_longer=x["is_longer"])
    te, ae = (v if isinstance(v, torch.Tensor) else v.pooler_output for v in (te, ae))
    assert a == pytest.approx(float(torch.nn.functional.cosine_similarity(te, ae)), abs=1e-6)


def test_a_folder_that_is_not_clap_is_one_sentence(tmp_path):
    from audiotrain.safe_files import BadFileError
    from audiotrain_songgen.clap import ClapScore

    (tmp_path / "x").mkdir()
    with pytest.raises(BadFileError, match=r"model\.clap_path"):
        ClapScore(tmp_path / "x").score(torch.zeros(1, 16000), 16000, {"caption": "a song"})


@pytest.mark.slow
def test_a_run_logs_eval_clap(clap_dir, tmp_path):
    from audiotrain.plugins import registry

    data = registry.get("songgen").example_data(tmp_path / "songs", 2)
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", AUDIOTRAIN_CACHE=str(tmp_path / "cache"))
    p = subprocess.run([sys.executable, "-m", "audiotrain.cli.main", "model=songgen", f"data={data}", "debug=smoke",
                        "trainer.max_steps=2", "trainer.every_plot_step=0", "trainer.eval_audio=true",
                        "trainer.eval_every_n_steps=2", "trainer.eval_prompts=2", "model.max_new_frames=25",
                        f"model.clap_path={clap_dir}"], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    (metrics,) = (tmp_path / "exps" / "logs").glob("*/*/eval/step_2/metrics.json")
    result = json.loads(metrics.read_text())
    scores = [r["clap"] for r in result["per_example"]]
    assert len(scores) == 2 and all(-1 <= s <= 1 for s in scores)
    assert result["clap"] == pytest.approx(sum(scores) / 2)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("audiotrain/songgen").experiment_id])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "eval/clap")] == [0, 2]
