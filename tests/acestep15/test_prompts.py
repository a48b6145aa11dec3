"""One template and one padding rule for the text encoder at training and at inference (issue 19, point 2)."""
from __future__ import annotations

import pytest
import torch

from audiotrain.errors import UserError
from audiotrain_acestep15.prompts import (DEFAULT_DIT_INSTRUCTION, SongText, format_metas, lyrics_prompt,
                                          song_prompts, tokenize_songs, tokenize_texts)
from audiotrain_acestep15.tiny_text import tiny_tokenizer

ROW = {"id": "a1b2c3d4", "caption": "dreamy synth pop, female vocals", "lyrics": "[Verse]\nNeon rain on the window",
       "bpm": 120, "keyscale": "A minor", "timesignature": "4", "language": "en"}


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """The offline tiny tokenizer saved to a folder and read back through transformers' AutoTokenizer."""
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("tok")
    tiny_tokenizer().save_pretrained(str(folder))
    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


def test_caption_and_lyrics_templates_are_exact():
    caption, lyrics = song_prompts(SongText.from_mapping(ROW, duration=187.9))
    assert DEFAULT_DIT_INSTRUCTION == "Fill the audio semantic mask based on the given conditions:"
    assert caption == ("# Instruction\nFill the audio semantic mask based on the given conditions:\n\n"
                       "# Caption\ndreamy synth pop, female vocals\n\n"
                       "# Metas\n- bpm: 120\n- timesignature: 4\n- keyscale: A minor\n- duration: 187 seconds\n"
                       "<|endoftext|>\n")
    assert lyrics == "# Languages\nen\n\n# Lyric\n[Verse]\nNeon rain on the window<|endoftext|>"


def test_missing_metas_are_na_and_missing_lyrics_instrumental():
    assert format_metas(duration=30) == ("- bpm: N/A\n- timesignature: N/A\n- keyscale: N/A\n"
                                         "- duration: 30 seconds\n")
    assert format_metas(bpm=92.0, keyscale=" ", timesignature=None, duration=4.99) == (
        "- bpm: 92\n- timesignature: N/A\n- keyscale: N/A\n- duration: 4 seconds\n")
    assert lyrics_prompt(None) == "# Languages\nunknown\n\n# Lyric\n[Instrumental]<|endoftext|>"
    caption, _ = song_prompts(SongText(caption="x", duration=10), instruction="Repaint the mask area:")
    assert caption.startswith("# Instruction\nRepaint the mask area:\n\n# Caption\nx\n")
    with pytest.raises(UserError, match="no duration"):
        SongText.from_mapping({"caption": "x"})
    with pytest.raises(UserError, match="duration must be"):
        format_metas(duration=-1)


def test_training_and_inference_give_identical_ids_and_masks(tokenizer):
    """Training: a dataset row plus the decoded audio's length, batched with a longer song. Inference: the same
    song asked for by the user's arguments, alone. Same tokens, same mask over them; the batch's pads are right
    pads with mask 0 and the pad id."""
    train_song = SongText.from_mapping(ROW, duration=48000 * 187.9 / 48000)
    other = SongText.from_mapping({**ROW, "caption": ROW["caption"] * 4, "lyrics": ROW["lyrics"] * 5}, duration=200)
    infer_song = SongText(caption="dreamy synth pop, female vocals", lyrics="[Verse]\nNeon rain on the window",
                          bpm=120, keyscale="A minor", timesignature="4", language="en", duration=187.9)
    (t_text, t_lyr) = tokenize_songs(tokenizer, [train_song, other])
    (i_text, i_lyr) = tokenize_songs(tokenizer, [infer_song])
    for train, infer in ((t_text, i_text), (t_lyr, i_lyr)):
        n = int(infer.mask.sum())
        assert infer.mask.shape == (1, n) and bool(infer.mask.all())
        assert torch.equal(train.ids[0, :n], infer.ids[0]) and torch.equal(train.mask[0, :n], infer.mask[0])
        assert train.ids.shape[1] > n and int(train.mask[0].sum()) == n and int(train.mask[1].sum()) == train.ids.shape[1]
        assert bool((train.ids[0, n:] == tokenizer.pad_token_id).all()) and not bool(train.mask[0, n:].any())
    assert t_text.ids[0, int(i_text.mask.sum()) - 2] == tokenizer.convert_tokens_to_ids("<|endoftext|>")


def test_truncation_is_flagged_not_silent(tokenizer):
    batch = tokenize_texts(tokenizer, ["short", "x" * 50], max_length=20)
    assert batch.truncated == [False, True] and batch.ids.shape == (2, 20)
    assert batch.mask[0].tolist() == [1] * 5 + [0] * 15
    with pytest.raises(UserError, match="at least one song"):
        tokenize_texts(tokenizer, [], max_length=20)
