"""The real corpus, model and batch for the micro-benchmarks (run from the repository root)."""

import os

import pytest
import torch

from model import GPT, GPTConfig
from trainer.config import TrainConfig
from trainer.data import Batches, Corpus, load_corpus, resolve_corpus
from trainer.setup import model_config

CFG = TrainConfig()  # the default shape: batch 32 x 128, 824,897 parameters


@pytest.fixture(scope="session")
def corpus() -> Corpus:
    return load_corpus(resolve_corpus(os.environ.get("DATA"), download=True), CFG.block_size)


@pytest.fixture
def model(corpus) -> GPT:
    torch.manual_seed(CFG.seed)
    return GPT(model_config(CFG, corpus)).train()


@pytest.fixture
def batch(corpus) -> tuple[torch.Tensor, torch.Tensor]:
    return Batches(corpus.train, CFG.seed, CFG.batch_size, CFG.block_size).draw("train", 1)


def parameter_count() -> int:
    return sum(p.numel() for p in GPT(GPTConfig()).parameters())
