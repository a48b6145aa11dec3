"""A released-layout ``model.checkpoint_dir`` (``acestep-v15-turbo/``, ``vae/``, ``Qwen3-Embedding-0.6B/``), written by
the tests at tiny size: the backbone, the VAE, the text encoder, the condition encoder (read alone from the DiT's
file) and the silence latent all come from it, strictly, and a training step runs on the features they cache."""
from __future__ import annotations

import pytest
import torch

from audiotrain.errors import UserError
from audiotrain_acestep15 import encoders
from audiotrain_acestep15.collate import collate
from audiotrain_acestep15.dit_checkpoint import save_dit
from audiotrain_acestep15.vae_files import save_vae
from tests.acestep15.plugin_kit import tiny


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """(tiny parts, checkpoint_dir) with the tiny weights saved in the released layout."""
    root = tmp_path_factory.mktemp("released")
    plugin, cfg, feats = tiny(root / "tiny")
    ckpt = root / "checkpoints"
    dit = encoders.build_dit(cfg)
    save_dit(dit, ckpt / "acestep-v15-turbo")
    silence = torch.randn(1, 8, 15000, generator=torch.Generator().manual_seed(0))
    torch.save(silence, ckpt / "acestep-v15-turbo" / "silence_latent.pt")
    save_vae(encoders.make_vae(cfg), ckpt / "vae")
    encoders.make_text_encoder(cfg).save_pretrained(ckpt / "Qwen3-Embedding-0.6B")
    return plugin, cfg, feats, dit, silence, ckpt


def test_a_released_folder_builds_every_part_from_its_files(released):
    plugin, _, feats, dit, silence, ckpt = released
    _, cfg, got = tiny(ckpt.parent / "run", f"model.checkpoint_dir={ckpt}", variant="turbo")
    assert cfg.model.preset == "turbo"
    assert plugin.validate(cfg) == []
    backbone = plugin.build_backbone(cfg)
    want = dit.state_dict()
    assert all(torch.equal(v, want[k]) for k, v in backbone.model.state_dict().items())
    assert torch.equal(backbone.silence, silence[0].T)  # stored [1, 64, frames], used [frames, 64]
    encoder = encoders.load_condition_encoder(cfg)
    assert all(torch.equal(v, want[f"encoder.{k}"]) for k, v in encoder.state_dict().items())
    assert [it["latent_mean"].shape for it in got] == [it["latent_mean"].shape for it in feats]
    assert all(torch.equal(a["latent_mean"], b["latent_mean"]) for a, b in zip(got, feats))  # the same VAE
    backbone.train()
    loss = backbone.training_losses(collate(got[:2]), generator=torch.Generator().manual_seed(0))["loss"]
    assert torch.isfinite(loss)


def test_a_folder_missing_a_part_is_one_sentence(released, tmp_path):
    *_, ckpt = released
    from tests.conftest import compose

    (tmp_path / "vae").mkdir()
    cfg = compose(["model=acestep15", "model.variant=sft", f"model.checkpoint_dir={tmp_path}"])
    with pytest.raises(UserError, match="acestep-v15-sft.*model.dit_folder"):
        encoders.folders(cfg)
    other = compose(["model=acestep15", "model.variant=sft", f"model.checkpoint_dir={ckpt}",
                     "model.dit_folder=acestep-v15-turbo"])
    assert encoders.folders(other).dit == ckpt / "acestep-v15-turbo"
