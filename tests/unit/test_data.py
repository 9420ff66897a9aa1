"""trainer.data: the seed of each draw, the batches drawn from it, and the corpus checks."""

import itertools

import numpy as np
import pytest
import torch

from common.cli import UsageError
from trainer.data import Batches, load_corpus, stream_seed

DATA = np.arange(1000)
BATCH, BLOCK = 8, 16


def batches(**kw) -> Batches:
    return Batches(**{"data": DATA, "seed": 1337, "batch_size": BATCH, "block_size": BLOCK, **kw})


# stream_seed

GRID = list(itertools.product([0, 1, 1337], ["train", "val", "eval-train"], range(6), range(4)))


def test_stream_seed_is_distinct_over_seed_purpose_step_and_index():
    assert len({stream_seed(*key) for key in GRID}) == len(GRID)


def test_stream_seed_is_stable():
    assert [stream_seed(*key) for key in GRID] == [stream_seed(*key) for key in GRID]


def test_stream_seed_fits_in_63_bits():
    seeds = [stream_seed(*key) for key in GRID]
    assert all(0 <= s < 2 ** 63 for s in seeds)
    assert max(seeds) >= 2 ** 60  # the whole range is used, not a few low bits


def test_stream_seed_index_defaults_to_zero():
    assert stream_seed(1, "train", 2) == stream_seed(1, "train", 2, 0)


# Batches.draw

def test_draw_shapes():
    x, y = batches().draw("train", 1)
    assert x.shape == y.shape == (BATCH, BLOCK)
    x, y = batches(rank=1, world_size=4).draw("train", 1)
    assert x.shape == y.shape == (BATCH // 4, BLOCK)


def test_targets_are_inputs_shifted_by_one():
    x, y = batches().draw("train", 1)
    assert torch.equal(y[:, :-1], x[:, 1:])


def test_each_window_is_a_contiguous_slice_of_data():
    x, y = batches().draw("train", 1)
    for inputs, targets in zip(x, y):
        start = int(inputs[0])
        assert torch.equal(inputs, torch.from_numpy(DATA[start:start + BLOCK]))
        assert torch.equal(targets, torch.from_numpy(DATA[start + 1:start + BLOCK + 1]))


def test_draw_gathers_the_windows_the_tensor_index_did():
    """The windows of a token file's map are those the int64 tensor of the same ids gave (the
    trainer's batches before the token cache): the same runs, to the last digit."""
    ids = np.random.default_rng(0).integers(0, 65, 5000).astype(np.uint8)
    x, y = Batches(ids, seed=1337, batch_size=BATCH, block_size=BLOCK, rank=1, world_size=2).draw("train", 3, 1)
    tensor = torch.from_numpy(ids.astype(np.int64))
    generator = torch.Generator().manual_seed(stream_seed(1337, "train", 3, 1))
    starts = torch.randint(len(tensor) - BLOCK, (BATCH,), generator=generator)[BATCH // 2:]
    windows = tensor[starts[:, None] + torch.arange(BLOCK + 1)]
    assert x.dtype == y.dtype == torch.long
    assert torch.equal(x, windows[:, :-1]) and torch.equal(y, windows[:, 1:])


def test_data_of_one_window_yields_that_window():
    data = np.arange(BLOCK + 1)  # the last target is the last token: no window beyond it
    x, y = Batches(data, seed=0, batch_size=4, block_size=BLOCK).draw("val", 1)
    window = torch.from_numpy(data)
    assert torch.equal(x, window[:-1].expand(4, -1)) and torch.equal(y, window[1:].expand(4, -1))


@pytest.mark.parametrize("world_size", [2, 4, 8])
def test_ranks_slices_in_rank_order_make_the_world_of_one_batch(world_size):
    whole_x, whole_y = batches().draw("train", 7, 2)
    parts = [batches(rank=r, world_size=world_size).draw("train", 7, 2) for r in range(world_size)]
    assert torch.equal(torch.cat([x for x, _ in parts]), whole_x)
    assert torch.equal(torch.cat([y for _, y in parts]), whole_y)


@pytest.mark.parametrize("other", [("train", 2, 0), ("val", 1, 0), ("train", 1, 1)],
                         ids=["step", "purpose", "index"])
def test_another_step_purpose_or_index_draws_another_batch(other):
    assert not torch.equal(batches().draw("train", 1, 0)[0], batches().draw(*other)[0])


def test_another_seed_draws_another_batch():
    assert not torch.equal(batches().draw("train", 1)[0], batches(seed=1338).draw("train", 1)[0])


def test_same_arguments_draw_the_same_batch():
    first = batches().draw("train", 5, 3)
    batches().draw("train", 6)  # a draw in between changes nothing: no hidden state
    again = batches().draw("train", 5, 3)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])


# load_corpus

TEXT = "to be, or not to be: that is the question.\n" * 10


def test_load_corpus_vocab_is_the_sorted_unique_characters(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text(TEXT, encoding="utf-8")
    corpus = load_corpus(path, block_size=8)
    assert corpus.vocab == "".join(sorted(set(TEXT)))
    assert corpus.decode(corpus.encode(TEXT)) == TEXT


def test_load_corpus_splits_90_10(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text(TEXT, encoding="utf-8")
    corpus = load_corpus(path, block_size=8)
    assert len(corpus.train) == int(0.9 * len(TEXT)) and len(corpus.val) == len(TEXT) - len(corpus.train)
    assert corpus.train.dtype == corpus.val.dtype == np.uint8  # 14 characters: one byte each
    assert corpus.decode(np.concatenate([corpus.train, corpus.val]).tolist()) == TEXT


def test_load_corpus_accepts_the_length_its_error_asks_for(tmp_path):
    block_size = 9
    path = tmp_path / "c.txt"
    path.write_text(("abcdefghij" * 10)[:10 * (block_size + 1)], encoding="utf-8")
    assert len(load_corpus(path, block_size).val) == block_size + 1


@pytest.mark.parametrize("content, says", [
    (b"", "is empty"),
    (b"caf\xe9 au lait " * 20, "is not UTF-8 (byte 3)"),
    (b"too short for a block", "is too short"),
], ids=["empty", "not-utf8", "too-short"])
def test_load_corpus_refuses_bad_files_naming_them(tmp_path, content, says):
    path = tmp_path / "bad corpus.txt"
    path.write_bytes(content)
    with pytest.raises(UsageError) as caught:
        load_corpus(path, block_size=8)
    assert f"corpus {path} {says}" in str(caught.value)


def test_load_corpus_of_a_missing_file_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="missing.txt does not exist"):
        load_corpus(tmp_path / "missing.txt", block_size=8)
