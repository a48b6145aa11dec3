"""`audiotrain export` and `audiotrain merge` on a real (tiny) run directory."""
from __future__ import annotations

import torch

from audiotrain.cli.main import main
from audiotrain.lora import adapter as lora
from audiotrain.train.run import train
from audiotrain_acestep import checkpoint
from audiotrain_acestep.encoders import build_backbone


def test_export_and_merge_a_run(tiny_cfg, tmp_path, capsys):
    cfg = tiny_cfg("trainer.max_steps=3", "optimizer.lr=5e-3", run="to_merge")
    s = train(cfg)
    run_dir = s["run_dir"]

    assert main(["export", run_dir, "--out", str(tmp_path / "exported")]) == 0
    assert (tmp_path / "exported" / "peft" / "adapter_config.json").is_file()
    assert (tmp_path / "exported" / "acestep" / "pytorch_lora_weights.safetensors").is_file()
    assert main(["export", str(tmp_path / "nothing_here")]) == 2
    assert "holds no adapter" in capsys.readouterr().err

    assert main(["merge", run_dir, "--out", str(tmp_path / "merged")]) == 0
    merged = checkpoint.load_transformer(tmp_path / "merged")

    # the LoRA model of the run, rebuilt from its adapter, gives the same output as the merged weights
    backbone = build_backbone(cfg)
    settings, state = lora.load_peft(f"{run_dir}/adapters/final/peft")
    lora.attach(backbone.adapter_root(), settings)
    lora.load_adapter_state(backbone.adapter_root(), state)
    g = torch.Generator().manual_seed(0)
    x = dict(hidden_states=torch.randn(1, 8, 16, 6, generator=g), attention_mask=torch.ones(1, 6),
             encoder_text_hidden_states=torch.randn(1, 3, 32, generator=g), text_attention_mask=torch.ones(1, 3),
             speaker_embeds=torch.randn(1, 16, generator=g), lyric_token_idx=torch.tensor([[261, 259, 40, 2]]),
             lyric_mask=torch.ones(1, 4), timestep=torch.tensor([500.0]))
    with torch.no_grad():
        want = backbone.adapter_root().eval()(**x).sample
        got = merged.eval()(**x).sample
        base = build_backbone(cfg).adapter_root().eval()(**x).sample
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, base)  # the adapter really is in the merged weights
