"""BucketBatchSampler: each order's exact semantics, the seconds cap, exact resume, DDP split."""
from __future__ import annotations

import warnings

import lightning as L
import pytest
import torch

from audiotrain.data.batching import Resumable, BucketBatchSampler, padding_waste

#            0    1    2    3    4    5    6    7
DUR = [1.0, 2.2, 0.9, 3.1, 1.2, 2.0, 0.8, 5.0]
SPK = ["a", "b", "a", "c", "b", "a", "c", "b"]


def flat(batches):
    return [i for b in batches for i in b]


def make(order, **kw):
    kw.setdefault("batch_size", 1)
    return BucketBatchSampler(DUR, SPK, order=order, **kw)


def consume(sampler, k=None):
    """Iterate like the training module does (advance per batch); stop after k batches."""
    out = []
    for b in sampler:
        out.append(b)
        sampler.advance(len(b))
        if k is not None and len(out) == k:
            break
    return out


# ---- orders -----------------------------------------------------------------------------------
def test_interleaved_is_round_robin_across_speakers():
    assert flat(make("interleaved", shuffle=False).global_batches(0)) == [0, 1, 3, 2, 4, 6, 5, 7]
    order = flat(make("interleaved", seed=3).global_batches(0))
    rounds = [order[0:3], order[3:6], order[6:8]]  # a, b, c have 3, 3, 2 items
    assert [sorted(SPK[i] for i in r) for r in rounds] == [["a", "b", "c"], ["a", "b", "c"], ["a", "b"]]
    assert [SPK[i] for i in rounds[0]] == [SPK[i] for i in rounds[1]][:3]  # same speaker order each round
    assert sorted(order) == list(range(8))


def test_duration_buckets_sorted_then_interleaved_short_to_long():
    # buckets: 1 s {0, 2, 4, 6}, 2 s {1, 5}, 3 s {3}, 5 s {7}; inside 1 s: sorted 6, 2, 0, 4 -> a[2, 0] b[4] c[6]
    assert flat(make("duration", shuffle=False).global_batches(0)) == [2, 4, 6, 0, 5, 1, 3, 7]
    for seed in range(4):
        order = flat(make("duration", seed=seed).global_batches(0))
        assert [round(DUR[i]) for i in order] == sorted(round(DUR[i]) for i in order)
        for s in "abc":  # each speaker's items ascending inside a bucket
            mine = [i for i in order if SPK[i] == s and round(DUR[i]) == 1]
            assert [DUR[i] for i in mine] == sorted(DUR[i] for i in mine)


def test_speaker_batches_hold_one_speaker_and_speakers_take_turns():
    s = make("speaker", batch_size=2, shuffle=False)
    assert s.global_batches(0) == [[0, 2], [1, 4], [3, 6], [5], [7]]
    for seed in range(4):
        batches = make("speaker", batch_size=2, seed=seed).global_batches(0)
        assert all(len({SPK[i] for i in b}) == 1 for b in batches)
        first_round = [SPK[b[0]] for b in batches[:3]]
        assert sorted(first_round) == ["a", "b", "c"]
        assert sorted(flat(batches)) == list(range(8))


def test_random_is_the_seeded_permutation():
    g = torch.Generator().manual_seed(7 * 1_000_003 + 2)
    assert flat(make("random", seed=7).global_batches(2)) == torch.randperm(8, generator=g).tolist()
    assert flat(make("random", shuffle=False).global_batches(0)) == list(range(8))


def test_bad_arguments_are_one_sentence_errors():
    with pytest.raises(ValueError, match="order='fast' is unknown"):
        make("fast")
    with pytest.raises(ValueError, match="durations must be finite"):
        BucketBatchSampler([1.0, float("nan")], ["a", "b"])
    with pytest.raises(ValueError, match="one of each"):
        BucketBatchSampler([1.0], ["a", "b"])


# ---- the seconds cap --------------------------------------------------------------------------
def test_cap_counts_longest_times_count_and_keeps_oversized_singletons():
    s = make("interleaved", shuffle=False, max_batch_seconds=4.0, batch_size=100)
    assert s.global_batches(0) == [[0], [1], [3], [2, 4, 6], [5], [7]]
    assert s.oversized == 1
    assert s.batch_cost([2, 4, 6]) == pytest.approx(3.6)
    for order in ("interleaved", "duration", "speaker", "random"):
        for seed in range(5):
            s = make(order, seed=seed, max_batch_seconds=4.0, batch_size=3, shuffle_batches=True, drop_last=True)
            batches = s.global_batches(0)
            for b in batches:
                assert len(b) <= 3
                assert s.batch_cost(b) <= 4.0 or (len(b) == 1 and DUR[b[0]] > 4.0)
            assert [7] in batches  # never dropped, even by drop_last


def test_drop_last_drops_only_a_short_final_batch():
    assert make("interleaved", shuffle=False, batch_size=3).global_batches(0) == [[0, 1, 3], [2, 4, 6], [5, 7]]
    assert make("interleaved", shuffle=False, batch_size=3, drop_last=True).global_batches(0) == [[0, 1, 3], [2, 4, 6]]
    assert len(make("interleaved", shuffle=False, batch_size=4, drop_last=True)) == 2  # 8 items: nothing short


# ---- determinism and epochs -------------------------------------------------------------------
@pytest.mark.parametrize("order", ["interleaved", "duration", "speaker", "random"])
def test_deterministic_for_a_seed_and_different_across_epochs(order):
    a, b = make(order, seed=1, batch_size=2), make(order, seed=1, batch_size=2)
    assert consume(a) == consume(b)
    epochs = [consume(a) for _ in range(4)]
    assert any(e != epochs[0] for e in epochs[1:])
    assert all(sorted(flat(e)) == list(range(8)) for e in epochs)
    assert a.epoch == 4
    seeds = {tuple(flat(make(order, seed=s, batch_size=2).global_batches(0))) for s in range(6)}
    assert len(seeds) > 1


def test_an_unconsumed_iterator_does_not_skip_an_epoch():
    s = make("random", seed=2, batch_size=2)
    first = next(iter(s))  # created and dropped before training (Lightning's setup_data does this)
    assert consume(s) == s.epoch_batches(0) and first == s.epoch_batches(0)[0]
    assert consume(s) == s.epoch_batches(1)
    s.set_epoch(5)
    assert list(s) == s.epoch_batches(5)


# ---- resume -----------------------------------------------------------------------------------
@pytest.mark.parametrize("order", ["interleaved", "duration", "speaker", "random"])
@pytest.mark.parametrize("k", [0, 1, 3])
def test_resume_mid_epoch_continues_with_the_next_batch(order, k):
    kw = dict(seed=11, batch_size=2, max_batch_seconds=5.0, shuffle_batches=True)
    ref = make(order, **kw)
    uninterrupted = [consume(ref) for _ in range(3)]
    a = make(order, **kw)
    consume(a)
    done = consume(a, k) if k else []
    state = a.state_dict()
    b = make(order, **kw)
    b.load_state_dict(state)
    assert len(b) == len(uninterrupted[1])
    assert done + consume(b) == uninterrupted[1]
    assert consume(b) == uninterrupted[2]


def test_resume_at_the_end_of_an_epoch_starts_the_next():
    a = make("interleaved", seed=4, batch_size=3)
    consume(a)
    b = make("interleaved", seed=4, batch_size=3)
    b.load_state_dict(a.state_dict())
    assert consume(b) == a.epoch_batches(1)


def test_resume_refuses_changed_data_or_settings():
    a = make("interleaved", batch_size=2)
    consume(a, 2)
    state = a.state_dict()
    other = BucketBatchSampler(DUR[:-1] + [4.0], SPK, order="interleaved", batch_size=2)
    with pytest.raises(ValueError, match="different data .* resume with the same data"):
        other.load_state_dict(state)
    with pytest.raises(ValueError, match="batch_size 2 -> 3"):
        make("interleaved", batch_size=3).load_state_dict(state)
    with pytest.raises(ValueError, match="not a BucketBatchSampler"):
        make("interleaved").load_state_dict({"epoch": 0, "consumed": 3, "num_items": 8})


def test_a_state_saved_under_the_earlier_name_resumes_the_same_batches():
    a = make("duration", batch_size=2)
    consume(a, 3)
    state = {**a.state_dict(), "kind": "speech_batch"}  # what checkpoints of SpeechBatchSampler hold
    b = make("duration", batch_size=2)
    b.load_state_dict(state)
    assert consume(b) == a.epoch_batches(0)[3:]


def test_both_samplers_share_the_resumable_protocol():
    from audiotrain.data.sampler import ResumableSampler

    assert isinstance(make("random"), Resumable) and isinstance(ResumableSampler(4), Resumable)


# ---- DDP --------------------------------------------------------------------------------------
@pytest.mark.parametrize("drop_last", [False, True])
def test_ranks_take_disjoint_strides_of_one_global_plan(drop_last):
    kw = dict(order="interleaved", batch_size=1, seed=5, drop_last=drop_last)
    plan = BucketBatchSampler(DUR, SPK, **kw).global_batches(0)  # 8 batches
    for world in (2, 3):
        ranks = [BucketBatchSampler(DUR, SPK, num_replicas=world, rank=r, **kw) for r in range(world)]
        per_rank = [consume(s) for s in ranks]
        assert len({len(p) for p in per_rank}) == 1 and all(len(s) == len(per_rank[0]) for s in ranks)
        seen = flat(flat(per_rank))
        if len(plan) % world == 0:
            assert sorted(seen) == list(range(8))  # disjoint and complete
        elif drop_last:
            assert len(seen) == len(set(seen)) == len(plan) // world * world
        else:
            assert set(seen) == set(range(8)) and len(seen) - len(set(seen)) == (-len(plan)) % world
        for r, p in enumerate(per_rank):
            assert p[0] == plan[r]


# ---- through Lightning ------------------------------------------------------------------------
class _Seen(L.LightningModule):
    def __init__(self, sampler):
        super().__init__()
        self.lin = torch.nn.Linear(1, 1)
        self.sampler, self.seen = sampler, []

    def training_step(self, batch, batch_idx):
        self.seen.append(list(batch))
        self.sampler.advance(len(batch))
        x = torch.tensor(batch, dtype=torch.float32)[:, None]
        return (self.lin(x) ** 2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def on_save_checkpoint(self, checkpoint):
        checkpoint["sampler"] = self.sampler.state_dict()

    def on_load_checkpoint(self, checkpoint):
        self.sampler.load_state_dict(checkpoint["sampler"])


def _fit(tmp_path, max_steps, ckpt=None):
    sampler = make("interleaved", seed=9, batch_size=2, max_batch_seconds=4.5, shuffle_batches=True)
    module = _Seen(sampler)
    loader = torch.utils.data.DataLoader(list(range(8)), batch_sampler=sampler, collate_fn=list)
    trainer = L.Trainer(max_steps=max_steps, logger=False, enable_progress_bar=False, enable_checkpointing=False,
                        enable_model_summary=False, accelerator="cpu", reload_dataloaders_every_n_epochs=1,
                        default_root_dir=str(tmp_path), num_sanity_val_steps=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, train_dataloaders=loader, ckpt_path=ckpt)
    return trainer, module, sampler


@pytest.mark.parametrize("k", [4, 6])  # mid-epoch, and exactly at the end of epoch 0 (6 batches)
def test_lightning_epochs_follow_the_plan_and_resume_exactly(tmp_path, k):
    _, full, sampler = _fit(tmp_path, 14)
    plan = make("interleaved", seed=9, batch_size=2, max_batch_seconds=4.5, shuffle_batches=True)
    assert len(plan.epoch_batches(0)) == 6
    assert full.seen == flat([plan.epoch_batches(e) for e in range(4)])[:14]
    trainer, part, _ = _fit(tmp_path, k)
    trainer.save_checkpoint(tmp_path / "mid.ckpt")
    _, resumed, _ = _fit(tmp_path, 14, ckpt=str(tmp_path / "mid.ckpt"))
    assert part.seen + resumed.seen == full.seen


def test_padding_waste_on_a_hand_made_corpus():
    lengths = [1.0, 2.0, 3.0, 4.0, 10.0, 10.0]
    # [1, 4] pads 1 to 4: 8 computed for 5 real; [2, 3] 6 for 5; [10, 10] 20 for 20 -> 34 / 30
    assert padding_waste([[0, 3], [1, 2], [4, 5]], lengths) == pytest.approx(34 / 30)
    assert padding_waste([[0], [1], [2], [3], [4], [5]], lengths) == 1.0  # batches of one never pad
    assert padding_waste([[0, 1, 2, 3, 4, 5]], lengths) == pytest.approx(60 / 30)
    with pytest.raises(ValueError):
        padding_waste([[0]], [0.0])


def test_duration_buckets_waste_less_than_random_order():
    g = torch.Generator().manual_seed(0)
    durations = (1.0 + 14.0 * torch.rand(400, generator=g)).tolist()  # 1-15 s, as a speech corpus
    groups = [f"s{i % 7}" for i in range(400)]
    bucketed = BucketBatchSampler(durations, groups, order="duration", batch_size=8, seed=1)
    shuffled = BucketBatchSampler(durations, groups, order="random", batch_size=8, seed=1)
    w_b = padding_waste(bucketed.epoch_batches(0), durations)
    w_r = padding_waste(shuffled.epoch_batches(0), durations)
    assert w_b <= 1.10 < 1.3 < w_r
