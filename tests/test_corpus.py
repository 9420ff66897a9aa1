"""A folder as the corpus, under torchrun: its files joined in name order, tokenized once, every
rank reading the one token file."""

from tests.conftest import QUICK, run, trainer_cmd
from trainer import token_cache


def test_a_folder_corpus_trains_at_nproc_2_from_one_token_file(tmp_path):
    folder = tmp_path / "works"
    folder.mkdir()
    texts = ["First Citizen:\nBefore we proceed any further, hear me speak.\n" * 40,
             "\ufeff" + "Κάλλιστον — the fairest, 美しい.\n" * 40]  # a BOM, and multi-byte characters
    for name, text in zip(("act1.txt", "act2.txt"), texts):
        (folder / name).write_text(text, encoding="utf-8")
    characters = sum(len(t) for t in texts) - 1  # the BOM is not text
    result = run(trainer_cmd(2, "--data", folder, "--out", tmp_path / "out", "--steps", 2, "--eval-every", 2,
                             "--block-size", 32, *QUICK), timeout=240)
    assert result.returncode == 0, result.stderr
    vocab = len(set("".join(texts)) - {"\ufeff"})
    assert f"corpus 2 file(s), {characters:,} characters, vocab {vocab}" in result.stdout
    cached = sorted(p.suffix for p in (folder / token_cache.FOLDER).iterdir())
    assert cached == [".bin", ".json"]  # one token file, made by one process, mapped by both ranks
