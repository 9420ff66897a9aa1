"""The course's character-level GPT: pre-LayerNorm blocks, learned positions, ReLU MLP.

q, k and v come from one fused bias-free Linear (the same count as three separate ones), and
attention is two batched matmuls around a softmax (causal_attention below): under bf16 autocast
that is far faster on CPU than scaled_dot_product_attention, whose fused kernel's bf16 backward is
slow, and in fp32 it is on par with it (`make bench-levers` measures both).
"""

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = 65
    block_size: int = 128
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    mlp_ratio: int = 4  # MLP width = mlp_ratio * n_embd = 512
    # Dropout on the residual branches. Dropout on the attention probabilities (the textbook's
    # place for it) is off by default and not a trainer flag: python -m bench.levers measures
    # what it costs.
    dropout: float = 0.0
    attn_dropout: float = 0.0

    def __post_init__(self):
        # Checked here rather than by the layers, so that a config that builds no model fails
        # as soon as it is made (the checkpoint validator reads shapes without building one).
        sizes = {k: getattr(self, k) for k in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "mlp_ratio")}
        for name, value in sizes.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} is {value!r}, not a positive whole number")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd {self.n_embd} is not a multiple of n_head {self.n_head}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "GPTConfig":
        return cls(**{k: values[k] for k in cls.__dataclass_fields__ if k in values})

    def shape(self) -> dict:
        """The fields that decide the parameter tensors (dropout does not)."""
        values = self.to_dict()
        values.pop("dropout")
        values.pop("attn_dropout")
        return values


def causal_bias(T: int, device: torch.device | None = None) -> torch.Tensor:
    """(T, T): 0 on and below the diagonal, -inf above it.

    Built for each T rather than sliced from a stored block_size table: 16K values cost nothing
    next to the matmuls, and torch.export cannot prove a slice [:T, :T] of a fixed table valid for
    every T up to block_size.
    """
    return torch.full((T, T), float("-inf"), device=device).triu(1)


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal_bias: torch.Tensor,
                     dropout_p: float = 0.0) -> torch.Tensor:
    """softmax(q k^T / sqrt(head size) + causal_bias) v for q, k, v of shape (batch x heads, T, head size).

    The same function as scaled_dot_product_attention(q, k, v, is_causal=True) (a test holds the
    two together), written as baddbmm + softmax + bmm because that is what runs fast on CPU: under
    bf16 autocast both matmuls run on the CPU's bf16 units and the softmax reads and writes bf16
    (its CPU kernel sums in fp32). Taking it in fp32 instead would cast the T x T scores up and
    the probabilities back down, forward and backward, and the second matmul would still see
    them in bf16. causal_bias is 0 on and below the diagonal and -inf above it: added to the
    scores, it gives the future zero weight.
    """
    scale = q.size(-1) ** -0.5
    scores = torch.baddbmm(causal_bias, q, k.transpose(1, 2), alpha=scale)
    weights = torch.softmax(scores, dim=-1)
    if dropout_p > 0:
        weights = F.dropout(weights, dropout_p)
    return torch.bmm(weights, v)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=False)
        self.proj = nn.Linear(config.n_embd, config.n_embd)
        self.dropout = nn.Dropout(config.dropout)
        self.attn_dropout = config.attn_dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        H = self.n_head
        # (B, T, 3C) -> 3 x (B * heads, T, head size): one copy lays out q, k and v for bmm.
        q, k, v = self.qkv(x).view(B, T, 3, H, C // H).permute(2, 0, 3, 1, 4).reshape(3, B * H, T, C // H)
        p = self.attn_dropout if self.training else 0.0
        y = causal_attention(q, k, v, causal_bias(T, x.device), p)
        y = y.view(B, H, T, C // H).transpose(1, 2).reshape(B, T, C)
        return self.dropout(self.proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        hidden = config.mlp_ratio * config.n_embd
        self.fc = nn.Linear(config.n_embd, hidden)
        self.proj = nn.Linear(hidden, config.n_embd)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.relu(self.fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln2 = nn.LayerNorm(config.n_embd)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.pos_emb = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size)
        # Small weights (std 0.02, as GPT-2) keep a fresh model's logits near zero, so its
        # predictions are near uniform and its loss near ln(vocab_size).
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Token ids (B, T) with T <= block_size -> logits (B, T, vocab_size)."""
        T = idx.shape[1]
        pos = torch.arange(T, device=idx.device)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(pos))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))


def next_token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of logits (B, T, V) against the next characters (B, T).

    A function rather than a GPT method: DDP only synchronises gradients for work done
    through the wrapped module's forward(), so the loss is computed outside it.
    """
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def weight_shapes(config: GPTConfig) -> dict[str, tuple[int, ...]]:
    """The name and shape of every entry of GPT(config).state_dict(), in its order, with no model
    built: a config far too large to train still answers, and at once. (Building it on the meta
    device would do too, but its initialisers import torch._dynamo, which would slow every start of
    the export, the generators and the launcher. A unit test holds the two to the same answer.)"""
    d, hidden, vocab = config.n_embd, config.mlp_ratio * config.n_embd, config.vocab_size
    shapes = {"tok_emb.weight": (vocab, d), "pos_emb.weight": (config.block_size, d)}
    for i in range(config.n_layer):
        block = {"ln1.weight": (d,), "ln1.bias": (d,), "attn.qkv.weight": (3 * d, d), "attn.proj.weight": (d, d),
                 "attn.proj.bias": (d,), "ln2.weight": (d,), "ln2.bias": (d,), "mlp.fc.weight": (hidden, d),
                 "mlp.fc.bias": (hidden,), "mlp.proj.weight": (d, hidden), "mlp.proj.bias": (d,)}
        shapes.update({f"blocks.{i}.{name}": shape for name, shape in block.items()})
    return {**shapes, "ln_f.weight": (d,), "ln_f.bias": (d,), "lm_head.weight": (vocab, d), "lm_head.bias": (vocab,)}


def uniform_loss(vocab_size: int) -> float:
    """The loss of a model that knows nothing: ln(vocab_size), 4.17 for 65 characters."""
    return math.log(vocab_size)
