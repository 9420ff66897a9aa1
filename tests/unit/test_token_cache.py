"""trainer.token_cache and trainer.tokenizer: a corpus tokenized once, reused while it is the same,
tokenized again when it changes; any UTF-8, in any chunking; folders; nothing half-written."""

import errno
import os

import numpy as np
import pytest

from common.cli import UsageError
from trainer import token_cache, tokenizer
from trainer.data import corpus_files, load_corpus

TEXT = "to be, or not to be: that is the question.\n" * 10
# Greek, Cyrillic, CJK and an emoji: 2-, 3- and 4-byte characters, and more than 256 of them.
WIDE = "".join(chr(c) for c in range(0x3B1, 0x3C9)) + "сонет — 詩 🎭\n" + "".join(chr(0x4E00 + i) for i in range(300))


def naive_ids(text: str) -> list[int]:
    vocab = sorted(set(text))
    return [vocab.index(c) for c in text]


def corpus_ids(corpus) -> list[int]:
    return np.concatenate([corpus.train, corpus.val]).tolist()


def cache_entries(path) -> list[str]:
    return sorted(p.name for p in (path.parent / token_cache.FOLDER).iterdir())


def test_the_cache_is_beside_the_corpus_and_reused(tmp_path, monkeypatch):
    path = tmp_path / "c.txt"
    path.write_text(TEXT)
    first = load_corpus(path, 8)
    assert [name.rsplit(".", 1)[1] for name in cache_entries(path)] == ["bin", "json"]
    monkeypatch.setattr(tokenizer, "scan", lambda *a, **k: pytest.fail("tokenized again"))
    again = load_corpus(path, 8)
    assert again.vocab == first.vocab and corpus_ids(again) == corpus_ids(first) == naive_ids(TEXT)


def test_a_changed_corpus_is_tokenized_again(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text(TEXT)
    load_corpus(path, 8)
    changed = TEXT.replace("question", "QUESTION")  # the same size
    path.write_text(changed)
    os.utime(path, ns=(1, 1))  # and another mtime
    corpus = load_corpus(path, 8)
    assert corpus.vocab == "".join(sorted(set(changed))) and corpus.decode(corpus_ids(corpus)) == changed
    assert len(cache_entries(path)) == 2  # replaced, not added to


def test_a_touched_corpus_is_hashed_not_tokenized(tmp_path, monkeypatch):
    path = tmp_path / "c.txt"
    path.write_text(TEXT)
    load_corpus(path, 8)
    os.utime(path, ns=(10**18, 10**18))
    monkeypatch.setattr(tokenizer, "scan", lambda *a, **k: pytest.fail("tokenized again"))
    corpus = load_corpus(path, 8)
    assert corpus.decode(corpus_ids(corpus)) == TEXT
    monkeypatch.setattr(token_cache, "content_sha256", lambda paths: pytest.fail("hashed again"))
    load_corpus(path, 8)  # the record now has the new mtime


def test_a_truncated_token_file_is_not_used(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text(TEXT)
    load_corpus(path, 8)
    bin_path, _ = token_cache.entry([path], str(path))
    with open(bin_path, "r+b") as f:
        f.truncate(100)
    assert corpus_ids(load_corpus(path, 8)) == naive_ids(TEXT)
    assert bin_path.stat().st_size == len(TEXT)


def test_a_damaged_record_is_not_used(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text(TEXT)
    load_corpus(path, 8)
    _, record_path = token_cache.entry([path], str(path))
    record_path.write_text('{"format": 1, "vocab": ')
    assert corpus_ids(load_corpus(path, 8)) == naive_ids(TEXT)


@pytest.mark.parametrize("chunk", [tokenizer.CHUNK, 5, 7], ids=["whole", "5-byte chunks", "7-byte chunks"])
def test_multibyte_characters_in_any_chunking(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(tokenizer, "CHUNK", chunk)  # characters cut across chunks
    text = (TEXT + WIDE) * 3
    path = tmp_path / "wide.txt"
    path.write_text(text, encoding="utf-8")
    corpus = load_corpus(path, 8)
    assert len(corpus.vocab) > 256 and corpus.train.dtype == np.uint16
    assert corpus_ids(corpus) == naive_ids(text)


def test_id_types_grow_with_the_vocabulary():
    assert [tokenizer.id_dtype(n) for n in (65, 256, 257, 65536, 65537)] == [
        np.uint8, np.uint8, np.uint16, np.uint16, np.int32]


def test_a_byte_order_mark_is_not_text(tmp_path):
    plain, marked = tmp_path / "plain.txt", tmp_path / "marked.txt"
    plain.write_text(TEXT, encoding="utf-8")
    marked.write_text(TEXT, encoding="utf-8-sig")  # the same text after a BOM
    assert marked.read_bytes().startswith(tokenizer.BOM)
    with_bom, without = load_corpus(marked, 8), load_corpus(plain, 8)
    assert "\ufeff" not in with_bom.vocab and with_bom.vocab == without.vocab
    assert corpus_ids(with_bom) == corpus_ids(without)


@pytest.mark.parametrize("chunk", [tokenizer.CHUNK, 4])
def test_not_utf8_names_the_byte_in_any_chunking(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(tokenizer, "CHUNK", chunk)
    path = tmp_path / "c.txt"
    path.write_bytes("héllo wörld ".encode() * 20 + b"\xff" + b"tail" * 50)
    with pytest.raises(UsageError, match=rf"corpus {path} is not UTF-8 \(byte {14 * 20}\)"):
        load_corpus(path, 8)


def test_a_file_ending_inside_a_character_is_not_utf8(tmp_path):
    path = tmp_path / "c.txt"
    path.write_bytes(TEXT.encode() + "é".encode()[:1])
    with pytest.raises(UsageError, match=rf"is not UTF-8 \(byte {len(TEXT)}\)"):
        load_corpus(path, 8)


def test_an_interrupted_tokenization_leaves_no_cache(tmp_path, monkeypatch):
    path = tmp_path / "c.txt"
    path.write_text(TEXT)
    real = tokenizer.write_ids

    def interrupted(paths, vocab, out, progress):
        out.write(b"\0" * 50)
        raise KeyboardInterrupt  # Ctrl-C halfway through

    monkeypatch.setattr(tokenizer, "write_ids", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_corpus(path, 8)
    assert cache_entries(path) == []
    monkeypatch.setattr(tokenizer, "write_ids", real)
    assert corpus_ids(load_corpus(path, 8)) == naive_ids(TEXT)


def test_a_killed_tokenizers_temporary_file_is_removed_once_stale(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text(TEXT)
    bin_path, _ = token_cache.entry([path], str(path))
    stale, fresh = (bin_path.parent / f".{bin_path.name}.{name}.tmp" for name in ("old", "new"))
    stale.write_bytes(b"x")
    fresh.write_bytes(b"x")  # another tokenizer may still be writing this one
    os.utime(stale, (0, 0))
    load_corpus(path, 8)
    assert not stale.exists() and fresh.exists()


def test_a_folder_is_its_files_in_name_order(tmp_path):
    folder = tmp_path / "works"
    (folder / "b-part").mkdir(parents=True)
    (folder / ".git").mkdir()
    texts = {"a.txt": "Act one.\n" * 30, "b-part/c.txt": "Act two.\n" * 30, "d.md": "\ufeff" + "Epilogue.\n" * 30}
    for name, text in texts.items():
        (folder / name).write_text(text, encoding="utf-8")
    (folder / ".hidden.txt").write_text("not part of it")
    (folder / ".git" / "config").write_text("nor this")
    assert [p.relative_to(folder).as_posix() for p in corpus_files(folder)] == list(texts)
    corpus = load_corpus(folder, 8)
    joined = "Act one.\n" * 30 + "Act two.\n" * 30 + "Epilogue.\n" * 30  # d.md's BOM skipped
    assert corpus.decode(corpus_ids(corpus)) == joined
    assert corpus.describe() == f"corpus 3 file(s), {len(joined):,} characters, vocab {len(set(joined))}"
    assert token_cache.FOLDER in os.listdir(folder)  # beside its files, and not one of them
    assert len(corpus_files(folder)) == 3


def test_a_glob_pattern_is_the_files_it_matches(tmp_path):
    for name in ("b.txt", "a.txt", "notes.md"):
        (tmp_path / name).write_text(f"{name} " * 40)
    corpus = load_corpus(str(tmp_path / "*.txt"), 8)
    assert corpus.decode(corpus_ids(corpus)) == "a.txt " * 40 + "b.txt " * 40


@pytest.mark.parametrize("make, says", [
    (lambda p: p.mkdir(), "holds no files"),
    (lambda p: None, "matches no file"),
])
def test_a_folder_or_pattern_without_files_is_one_line(tmp_path, make, says):
    target = tmp_path / "texts"
    make(target)
    data = target if says == "holds no files" else tmp_path / "*.none"
    with pytest.raises(UsageError, match=says):
        load_corpus(data, 8)


def test_an_unwritable_corpus_folder_caches_in_a_private_temporary_folder(tmp_path, monkeypatch):
    path = tmp_path / "c.txt"
    path.write_text(TEXT)
    writable = token_cache.check_writable

    def read_only_beside(folder):
        if folder.name == token_cache.FOLDER:
            raise PermissionError(13, "Permission denied")
        writable(folder)

    monkeypatch.setattr(token_cache, "check_writable", read_only_beside)
    monkeypatch.setattr(token_cache.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    corpus = load_corpus(path, 8)
    assert corpus_ids(corpus) == naive_ids(TEXT)
    (private,) = (tmp_path / "tmp").iterdir()
    assert private.stat().st_mode & 0o777 == 0o700 and len(list(private.iterdir())) == 2


def test_a_checkpoint_of_a_corpus_with_a_byte_order_mark_resumes_on_the_same_text_without(tmp_path):
    from trainer.checkpoint import Checkpoint
    from trainer.config import parse
    from trainer.run_folder import RunFolder
    from trainer.setup import final_config, model_config

    marked, plain = tmp_path / "marked" / "c.txt", tmp_path / "plain" / "c.txt"
    for path, encoding in ((marked, "utf-8-sig"), (plain, "utf-8")):
        path.parent.mkdir()
        path.write_text(TEXT, encoding=encoding)
    shape = ["--block-size", "8", "--n-layer", "1", "--n-head", "2", "--n-embd", "8", "--steps", "40"]
    trained, _ = parse(["--data", str(marked), *shape])
    corpus = load_corpus(marked, 8)
    saved = Checkpoint(model={}, model_config=model_config(trained, corpus).to_dict(), vocab=corpus.vocab, step=20,
                       optimizer={}, train_config=trained.to_dict())
    options = parse(["--resume", "--data", str(plain)])[1]
    resumed, _ = final_config(options, RunFolder(tmp_path), load_corpus(plain, 8), saved)
    assert resumed.steps == 40  # no "trained on another corpus's vocabulary"


def test_a_patterns_cache_is_named_without_its_wildcards(tmp_path):
    bin_path, record_path = token_cache.entry([tmp_path / "a.txt"], str(tmp_path / "*.txt"))
    assert bin_path.name.startswith("_.txt-") and record_path.parent == tmp_path / token_cache.FOLDER


def test_a_long_tokenization_says_how_far_it_is(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(token_cache.ProgressLine, "FIRST_S", 0.0)  # as if each chunk took more than a second
    monkeypatch.setattr(tokenizer, "CHUNK", 100)
    path = tmp_path / "c.txt"
    path.write_text(TEXT)
    load_corpus(path, 8)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"tokenizing corpus {path}: reading 0 of 0 MB")
    assert lines[-1].startswith(f"tokenized corpus {path}: {len(TEXT):,} characters in ")
    capsys.readouterr()
    load_corpus(path, 8)  # from the cache: nothing to say
    assert capsys.readouterr().out == ""


def test_a_full_disk_while_caching_is_one_line_and_leaves_no_cache(tmp_path, monkeypatch):
    path = tmp_path / "c.txt"
    path.write_text(TEXT)

    def full_disk(paths, vocab, out, progress):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tokenizer, "write_ids", full_disk)
    with pytest.raises(UsageError, match=r"cannot write the token cache .* \(No space left on device\): free space"):
        load_corpus(path, 8)
    assert cache_entries(path) == []


def test_drawing_batches_keeps_none_of_the_token_file_resident(tmp_path):
    from bench.data import token_map_kb
    from trainer.data import Batches

    path = tmp_path / "c.txt"
    path.write_bytes(b"to be or not to be\n" * (400 << 10))  # 7.8 MB: 120 pages of 64 KB
    corpus = load_corpus(path, 64)
    bin_path, _ = token_cache.entry([path], str(path))
    batches = Batches(corpus.train, seed=0, batch_size=32, block_size=64)
    for step in range(50):  # 1,600 windows: the kernel's fault-around alone would map the whole file
        x, _ = batches.draw("train", step)
    assert token_map_kb(os.getpid(), str(bin_path)) == 0
    assert corpus.decode(x[0].tolist()) in "to be or not to be\n" * 5  # the windows themselves are whole
