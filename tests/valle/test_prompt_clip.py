"""VALL-E's acoustic prompt, now cut by the core's conditioning-clip mechanism, follows the rule it always had:
the first uniform(model.prompt_duration_range) seconds of the codes of another utterance of the same speaker,
chosen from the step's seed (the utterance itself when its speaker has no other)."""
from __future__ import annotations

import random

import torch

from audiotrain.plugins import registry
from audiotrain.train.data_setup import load_data
from audiotrain.train.module import TrainModule


def expected_prompt(dataset, feats, index: int, seed: int, lo: float, hi: float, frame_rate: float) -> torch.Tensor:
    """The rule written out independently of the core: companion by torch.randint, length by random.uniform."""
    speakers = [it.row["speaker"] for it in dataset.items]
    others = [j for j, s in enumerate(speakers) if s == speakers[index] and j != index]
    j = index
    if others:
        j = others[torch.randint(len(others), (1,), generator=torch.Generator().manual_seed(seed)).item()]
    frames = max(1, int(random.Random(seed).uniform(lo, hi) * frame_rate))
    return feats[j]["codes"][:frames].long()


def test_the_prompt_is_the_same_as_before_for_a_fixed_seed(valle_cfg, tmp_path):
    cfg = valle_cfg("seed=11", "model.prompt_duration_range=[1.0,2.0]")
    plugin = registry.get("valle")
    data = load_data(cfg, plugin, tmp_path, "cpu", save_report=False)
    dataset, encoders = data.train, data.encoders
    assert dataset.groups == [it.row["speaker"] for it in dataset.items] and set(dataset.groups) == {"alice", "bob"}
    module = TrainModule(plugin.build_backbone(cfg), plugin, cfg, encoders, None, adapter_only=True)
    module.dataset = dataset
    feats = [module._item_features(dataset[i]) for i in range(len(dataset))]
    seen = set()
    for salt in (0, 1, 64, 129):
        batch = module.features([dataset[i] for i in range(len(dataset))], salt=salt)
        for pos, prom in enumerate(batch["proms"]):
            seed = (11 * 1_000_003 + salt * 131 + pos) % (2**31)
            want = expected_prompt(dataset, feats, pos, seed, 1.0, 2.0, 75.0)
            assert torch.equal(prom.cpu(), want)
            assert 1 <= prom.shape[0] <= 150  # at most 2.0 s of 75 Hz codes
            seen.add((pos, prom.shape[0]))
    assert len({n for _, n in seen}) > 4  # the lengths vary with the step
