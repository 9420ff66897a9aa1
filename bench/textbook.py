"""The textbook training loop the trainer is measured against.

The model is the one from the course chapter, written the way the chapter writes it: one
`Head` module per attention head, each with its own key, query and value projections and its
own causal mask, concatenated and projected; the plain Adam optimiser at 3e-4; torch's default
thread count. Same shape and parameter count as model.GPT (824,897), same 32 x 128 batches from
the same Batches, so the two differ only in how the work is done.

    python -m bench.textbook --steps 3000    # the whole chapter's run: wall time and final losses
"""

import sys
import time
from typing import Callable

import torch
import torch.nn as nn
from torch.nn import functional as F

from bench.timing import time_steps
from common import defaults
from common.cli import OneLineParser, UsageError, command
from trainer.config import TrainConfig
from trainer.data import Batches, Corpus, load_corpus, resolve_corpus

# The chapter's hyperparameters (the same shape as the trainer's default config).
n_embd, n_head, n_layer, block_size, batch_size = 128, 4, 4, 128, 32
dropout = 0.0  # as the benchmarked trainer runs
learning_rate = 3e-4


class Head(nn.Module):
    """One head of self-attention."""

    def __init__(self, head_size):
        super().__init__()
        self.key = nn.Linear(n_embd, head_size, bias=False)
        self.query = nn.Linear(n_embd, head_size, bias=False)
        self.value = nn.Linear(n_embd, head_size, bias=False)
        self.register_buffer("tril", torch.tril(torch.ones(block_size, block_size)))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        B, T, C = x.shape
        k = self.key(x)  # (B, T, hs)
        q = self.query(x)  # (B, T, hs)
        # attention scores ("affinities"), scaled by 1/sqrt(head size)
        wei = q @ k.transpose(-2, -1) * k.shape[-1] ** -0.5  # (B, T, T)
        wei = wei.masked_fill(self.tril[:T, :T] == 0, float("-inf"))  # no looking ahead
        wei = F.softmax(wei, dim=-1)
        wei = self.dropout(wei)
        v = self.value(x)  # (B, T, hs)
        return wei @ v  # (B, T, hs)


class MultiHeadAttention(nn.Module):
    """Several heads in parallel, concatenated, then projected."""

    def __init__(self, num_heads, head_size):
        super().__init__()
        self.heads = nn.ModuleList([Head(head_size) for _ in range(num_heads)])
        self.proj = nn.Linear(head_size * num_heads, n_embd)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        out = torch.cat([h(x) for h in self.heads], dim=-1)
        return self.dropout(self.proj(out))


class FeedForward(nn.Module):
    """A linear layer followed by a non-linearity, per position."""

    def __init__(self, n_embd):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(n_embd, 4 * n_embd),
            nn.ReLU(),
            nn.Linear(4 * n_embd, n_embd),
            nn.Dropout(dropout),
        )

    def forward(self, x):
        return self.net(x)


class Block(nn.Module):
    """Transformer block: communication (attention) then computation (feed-forward), pre-LayerNorm."""

    def __init__(self, n_embd, n_head):
        super().__init__()
        head_size = n_embd // n_head
        self.sa = MultiHeadAttention(n_head, head_size)
        self.ffwd = FeedForward(n_embd)
        self.ln1 = nn.LayerNorm(n_embd)
        self.ln2 = nn.LayerNorm(n_embd)

    def forward(self, x):
        x = x + self.sa(self.ln1(x))
        x = x + self.ffwd(self.ln2(x))
        return x


class GPTLanguageModel(nn.Module):
    def __init__(self, vocab_size):
        super().__init__()
        self.token_embedding_table = nn.Embedding(vocab_size, n_embd)
        self.position_embedding_table = nn.Embedding(block_size, n_embd)
        self.blocks = nn.Sequential(*[Block(n_embd, n_head=n_head) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(n_embd)
        self.lm_head = nn.Linear(n_embd, vocab_size)
        self.apply(self._init_weights)

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx, targets=None):
        B, T = idx.shape
        tok_emb = self.token_embedding_table(idx)  # (B, T, C)
        pos_emb = self.position_embedding_table(torch.arange(T))  # (T, C)
        x = tok_emb + pos_emb
        x = self.blocks(x)
        x = self.ln_f(x)
        logits = self.lm_head(x)  # (B, T, vocab_size)
        if targets is None:
            return logits, None
        B, T, C = logits.shape
        # reshape, not the chapter's view: Batches' targets are a strided slice of its windows
        loss = F.cross_entropy(logits.view(B * T, C), targets.reshape(B * T))
        return logits, loss


def make_step(corpus: Corpus, seed: int = TrainConfig.seed):
    """The model, its optimiser, and step(i) -> loss: the textbook loop's body for batch i."""
    torch.manual_seed(seed)
    model = GPTLanguageModel(len(corpus.vocab))
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    batches = Batches(corpus.train, seed, batch_size, block_size)

    def step(i: int) -> torch.Tensor:
        xb, yb = batches.draw("train", i)
        logits, loss = model(xb, yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    return model, step


def measure_textbook(corpus: Corpus, warmup: int, steps: int) -> dict:
    """steps/s and ms/step of the textbook loop, in this process at torch's default threads."""
    _, step = make_step(corpus)
    return {"threads_per_rank": torch.get_num_threads(), **time_steps(step, warmup, steps)}


@torch.no_grad()
def estimate_loss(model: GPTLanguageModel, corpus: Corpus, step: int, eval_iters: int) -> dict:
    """Mean loss over eval_iters batches per split: the same batches the trainer evaluates on."""
    model.eval()
    losses = {}
    for split, data in (("train", corpus.train), ("val", corpus.val)):
        total = 0.0
        batches = Batches(data, TrainConfig.seed, batch_size, block_size)
        for i in range(eval_iters):
            x, y = batches.draw(f"eval-{split}", step, index=i)
            total += model(x, y)[1].item()
        losses[split] = total / eval_iters
    model.train()
    return losses


def train(corpus: Corpus, steps: int, eval_every: int, eval_iters: int,
          on_evaluation: Callable[[dict], None] = lambda record: None) -> list[dict]:
    """Train the textbook loop `steps` steps, evaluating at step 1, every `eval_every` steps and at
    the last: the records {step, train_loss, val_loss, train_s}, train_s the seconds in training
    steps so far (evaluation excluded); each is also passed to on_evaluation as it is made."""
    model, step = make_step(corpus)
    records, train_s = [], 0.0
    for i in range(1, steps + 1):
        t0 = time.perf_counter()
        step(i)
        train_s += time.perf_counter() - t0
        if i == 1 or i % eval_every == 0 or i == steps:
            losses = estimate_loss(model, corpus, i, eval_iters)
            records.append({"step": i, "train_loss": losses["train"], "val_loss": losses["val"], "train_s": train_s})
            on_evaluation(records[-1])
    return records


@command
def main(argv: list[str]) -> int:
    p = OneLineParser(prog="python -m bench.textbook", description="Train the textbook loop and time it.")
    p.add_argument("--data", help=defaults.CORPUS_HELP)
    p.add_argument("--steps", type=int, default=TrainConfig.steps, help="training steps (default 3000)")
    p.add_argument("--eval-every", type=int, default=TrainConfig.eval_every,
                   help="steps between evaluations (default 300)")
    p.add_argument("--eval-iters", type=int, default=TrainConfig.eval_iters, help="batches per split (default 20)")
    args = p.parse_args(argv)
    if args.steps < 1 or args.eval_every < 1 or args.eval_iters < 1:
        raise UsageError("--steps, --eval-every and --eval-iters must be at least 1")
    corpus = load_corpus(resolve_corpus(args.data, download=True), block_size)
    print(f"textbook loop: {args.steps} steps, {torch.get_num_threads()} threads, Adam {learning_rate:g}", flush=True)
    start = time.perf_counter()

    def show(record: dict) -> None:
        print(f"step {record['step']} | train loss: {record['train_loss']:.4f} | val loss: "
              f"{record['val_loss']:.4f} | {record['step'] / record['train_s']:.2f} steps/s", flush=True)

    records = train(corpus, args.steps, args.eval_every, args.eval_iters, show)
    print(f"done: {args.steps} steps in {time.perf_counter() - start:.0f} s ({records[-1]['train_s']:.0f} s training)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
