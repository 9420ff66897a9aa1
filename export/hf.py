"""The checkpoint as a Hugging Face folder (hf/): what transformers and transformers.js load.

The model is GPT-2's architecture but for two details, both exactly representable in
GPT2Config: a ReLU MLP and LayerNorm eps 1e-5. Weights map one to one, with three changes:
the fused bias-free qkv becomes c_attn with a zero bias; every Linear weight is transposed
(GPT-2's Conv1D stores them input-major); and lm_head's bias, which GPT-2 has not, is folded into
ln_f's bias. That fold is exact when lm_head's weight (vocab x n_embd) has full row rank: then a
bias shift d with W d = b exists, d = pinv(W) b, and W (ln_f(x) + d) = W ln_f(x) + b.

The tokenizer is a `tokenizers` WordLevel model over the characters, with a pre-tokenizer that
isolates every character and a Fuse decoder: exact for any vocabulary of single characters
(byte-level BPE would be exact only for ASCII). onnx/model.onnx is a decoder with
past_key_values inputs and present outputs, the layout transformers.js generates from with a
KV cache. Writing the folder needs safetensors and tokenizers only, not transformers.
"""

import json
from pathlib import Path

import torch
import torch.nn as nn

from common import defaults
from common.cli import UsageError
from export.onnx_file import traced_onnx
from model import GPT, count_parameters
from trainer.checkpoint import Checkpoint

FOLDER = defaults.HF_FOLDER
ONNX_DECODER = "onnx/model.onnx"
FILES = defaults.HF_FILES
MODEL_FILES = defaults.HF_MODEL_FILES  # all but the model card: what model.json hashes
FOLD_TOLERANCE = 1e-6  # |W d - b| after the fold, relative to |b|: float64 pinv of a full-rank W gives ~1e-15


CARD_TRAINING_KEYS = ("steps", "batch_size", "seed", "recipe", "lr", "min_lr", "schedule", "warmup_steps", "beta1",
                      "beta2", "weight_decay", "grad_clip", "dropout")


class NotRepresentable(UsageError):
    """The checkpoint cannot be written as an exact GPT-2 folder; the message says why."""


def gpt2_config(model: GPT) -> dict:
    c = model.config
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": c.vocab_size, "n_positions": c.block_size, "n_embd": c.n_embd, "n_layer": c.n_layer,
        "n_head": c.n_head, "n_inner": c.mlp_ratio * c.n_embd, "activation_function": "relu",
        "layer_norm_epsilon": 1e-5, "tie_word_embeddings": False,
        "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
        "bos_token_id": None, "eos_token_id": None, "pad_token_id": None, "use_cache": True,
        # transformers.js picks onnx/model.onnx (fp32) by this, not a quantized file it would look for
        "transformers.js_config": {"dtype": "fp32"},
    }


def gpt2_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """GPT2LMHeadModel's tensors, named as transformers names them."""
    sd = {k: v.detach().float() for k, v in model.state_dict().items()}
    out = {"transformer.wte.weight": sd["tok_emb.weight"], "transformer.wpe.weight": sd["pos_emb.weight"]}
    for i in range(model.config.n_layer):
        src, dst = f"blocks.{i}.", f"transformer.h.{i}."
        qkv = sd[src + "attn.qkv.weight"]
        out |= {
            dst + "ln_1.weight": sd[src + "ln1.weight"], dst + "ln_1.bias": sd[src + "ln1.bias"],
            dst + "attn.c_attn.weight": qkv.t(), dst + "attn.c_attn.bias": torch.zeros(qkv.shape[0]),
            dst + "attn.c_proj.weight": sd[src + "attn.proj.weight"].t(),
            dst + "attn.c_proj.bias": sd[src + "attn.proj.bias"],
            dst + "ln_2.weight": sd[src + "ln2.weight"], dst + "ln_2.bias": sd[src + "ln2.bias"],
            dst + "mlp.c_fc.weight": sd[src + "mlp.fc.weight"].t(), dst + "mlp.c_fc.bias": sd[src + "mlp.fc.bias"],
            dst + "mlp.c_proj.weight": sd[src + "mlp.proj.weight"].t(),
            dst + "mlp.c_proj.bias": sd[src + "mlp.proj.bias"],
        }
    out["transformer.ln_f.weight"] = sd["ln_f.weight"]
    out["transformer.ln_f.bias"] = sd["ln_f.bias"] + folded_head_bias(sd["lm_head.weight"], sd["lm_head.bias"])
    out["lm_head.weight"] = sd["lm_head.weight"]
    return {k: v.contiguous() for k, v in out.items()}


def folded_head_bias(weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """d with weight @ d == bias, or NotRepresentable when no such d exists."""
    w, b = weight.double(), bias.double()
    vocab, n_embd = w.shape
    rank = int(torch.linalg.matrix_rank(w))
    shift = torch.linalg.pinv(w) @ b
    error = float((w @ shift - b).norm() / b.norm().clamp_min(1e-30))
    if rank < vocab or error > FOLD_TOLERANCE:
        raise NotRepresentable(
            f"{FOLDER}/ not written (the other exports are): lm_head's bias does not fold into GPT-2's ln_f "
            f"(its weight has rank {rank}, fewer than the {vocab} characters; n_embd {n_embd}); train with "
            "--n-embd of at least the vocabulary size to get a Hugging Face folder")
    return shift.float()


def tokenizer_json(vocab: str) -> str:
    """tokenizer.json: one token per character, ids as in common/vocab.py; checked exact here."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    unknown = "<unk>"  # never produced: every character of the vocabulary is a token, prompts are checked first
    tokenizer = Tokenizer(models.WordLevel({c: i for i, c in enumerate(vocab)}, unk_token=unknown))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    wrong = sorted(c for i, c in enumerate(vocab) if tokenizer.encode(c).ids != [i] or tokenizer.decode([i]) != c)
    if tokenizer.encode(vocab).ids != list(range(len(vocab))) or wrong:
        raise NotRepresentable(f"{FOLDER}/ not written (the other exports are): the tokenizer cannot represent "
                               f"the characters {''.join(wrong)!r} exactly; train on a corpus without them")
    return tokenizer.to_str(pretty=True)


TOKENIZER_CONFIG = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": None,
                    "clean_up_tokenization_spaces": False, "add_bos_token": False, "add_eos_token": False}


class CachedDecoder(nn.Module):
    """The project's model with a KV cache, in the interface transformers.js calls:
    (input_ids, attention_mask, position_ids, past k/v per layer) -> (logits, present k/v per layer).

    Past and present are (batch, heads, length, head size). A query at absolute position p
    attends to the keys at positions <= p that attention_mask marks 1, so the output equals the
    cache-free model's on the same tokens.
    """

    def __init__(self, model: GPT):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, position_ids, *past):
        m = self.model
        B, T = input_ids.shape
        H = m.config.n_head
        C = m.config.n_embd
        P = past[0].shape[2]
        x = m.tok_emb(input_ids) + m.pos_emb(position_ids)
        key_pos = torch.arange(P + T)
        query_pos = torch.arange(T) + P
        allowed = (key_pos[None, :] <= query_pos[:, None])[None, None] & attention_mask[:, None, None, :].bool()
        mask = torch.zeros(allowed.shape, dtype=x.dtype).masked_fill(~allowed, torch.finfo(x.dtype).min)
        presents = []
        for i, block in enumerate(m.blocks):
            q, k, v = block.attn.qkv(block.ln1(x)).view(B, T, 3, H, C // H).permute(2, 0, 3, 1, 4)
            k = torch.cat([past[2 * i], k], dim=2)
            v = torch.cat([past[2 * i + 1], v], dim=2)
            presents += [k, v]
            scores = q @ k.transpose(-1, -2) * (C // H) ** -0.5 + mask
            y = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(B, T, C)
            x = x + block.attn.proj(y)
            x = x + block.mlp(block.ln2(x))
        return (m.lm_head(m.ln_f(x)), *presents)


def cache_names(n_layer: int, prefix: str) -> list[str]:
    return [f"{prefix}.{i}.{kv}" for i in range(n_layer) for kv in ("key", "value")]


def cached_onnx(model: GPT, opset: int) -> bytes:
    """onnx/model.onnx: the CachedDecoder, batch, sequence and past length dynamic.

    The sizes carry the names transformers.js reads: it makes the first, empty cache from the
    inputs' shapes, with "batch_size" as the batch and 0 for the other names.
    """
    c = model.config
    B, T, P = 2, 3, 4  # example sizes; all three are dynamic in the graph
    past = [torch.zeros(B, c.n_head, P, c.n_embd // c.n_head) for _ in range(2 * c.n_layer)]
    args = (torch.zeros(B, T, dtype=torch.long), torch.ones(B, P + T, dtype=torch.long),
            torch.arange(P, P + T).expand(B, T), *past)
    inputs = ["input_ids", "attention_mask", "position_ids", *cache_names(c.n_layer, "past_key_values")]
    outputs = ["logits", *cache_names(c.n_layer, "present")]
    sizes = {"input_ids": {0: "batch_size", 1: "sequence_length"},
             "attention_mask": {0: "batch_size", 1: "total_sequence_length"},
             "position_ids": {0: "batch_size", 1: "sequence_length"},
             "logits": {0: "batch_size", 1: "sequence_length"}}
    sizes |= {name: {0: "batch_size", 2: "past_sequence_length"} for name in inputs[3:]}
    sizes |= {name: {0: "batch_size", 2: "total_sequence_length"} for name in outputs[1:]}
    return traced_onnx(CachedDecoder(model).eval(), args, inputs, outputs, sizes, opset)


def model_card(model: GPT, saved: Checkpoint) -> str:
    c = model.config
    losses, train_config = saved.losses, saved.train_config
    loss_lines = "\n".join(f"- {k}: {v:.4f}" for k, v in losses.items())
    # The training recipe only: where the run's files were (paths of one machine) says nothing here.
    trained_on = saved.trained_on or {}
    config_lines = "\n".join([*(f"- {k}: {v}" for k, v in train_config.items() if k in CARD_TRAINING_KEYS),
                              *([f"- dtype: {trained_on['dtype']}"] if trained_on.get("dtype") else [])])
    corpus = Path(trained_on.get("corpus") or "").name or "its corpus"
    return f"""---
library_name: transformers
pipeline_tag: text-generation
tags: [gpt2, character-level, tiny-shakespeare]
---
# Character-level GPT on Tiny Shakespeare

A {count_parameters(model):,}-parameter character-level GPT, trained from scratch on `{corpus}`
(Tiny Shakespeare: about 1.1 million characters of Shakespeare's plays, unless the run was given
another corpus) by a multi-process CPU trainer (PyTorch DDP).
Each token is one character: the vocabulary is the corpus's {c.vocab_size} characters.

## Architecture

GPT-2's (`GPT2LMHeadModel`): {c.n_layer} layers, {c.n_head} heads, n_embd {c.n_embd}, MLP width
{c.mlp_ratio * c.n_embd} with ReLU, LayerNorm eps 1e-5, learned positions, a context of {c.block_size}
characters, untied input and output embeddings. The trained model's output bias is folded exactly
into the final LayerNorm's bias.

## Training

Step {saved.step} of the run, on {saved.world_size} process(es) (PyTorch DDP on gloo).

{config_lines or "- (no training configuration recorded)"}

Final losses:

{loss_lines or "- (no losses recorded)"}

## Use

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("path/to/hf")
model = AutoModelForCausalLM.from_pretrained("path/to/hf")
ids = tokenizer("ROMEO:", return_tensors="pt").input_ids
out = model.generate(ids, max_new_tokens=100, do_sample=False)
print(tokenizer.decode(out[0]))
```

or `pipeline("text-generation", model="path/to/hf")`. In JavaScript, transformers.js loads the
same folder (onnx/model.onnx, a decoder with a KV cache).

## Limits

- The context is {c.block_size} characters, and `generate()` does not slide it: the prompt and the
  new characters together must stay within {c.block_size} tokens, or generation fails.
- The tokenizer knows only the {c.vocab_size} characters above; any other character cannot be encoded.
- A small model trained briefly on one corpus: it writes Shakespeare-like text, not facts.
"""


def hf_files(model: GPT, saved: Checkpoint, opset: int) -> dict[str, bytes]:
    """hf/'s files by name inside the folder; NotRepresentable when the model is not exactly GPT-2."""
    from safetensors.torch import save

    tensors = gpt2_state_dict(model)
    files = {
        "config.json": json.dumps(gpt2_config(model), indent=2) + "\n",
        "generation_config.json": json.dumps({"do_sample": False,
                                              "bos_token_id": None, "eos_token_id": None,
                                              "pad_token_id": None}, indent=2) + "\n",
        "model.safetensors": save(tensors, metadata={"format": "pt"}),
        "tokenizer.json": tokenizer_json(saved.vocab),
        "tokenizer_config.json": json.dumps(TOKENIZER_CONFIG, indent=2) + "\n",
        ONNX_DECODER: cached_onnx(model, opset),
        "README.md": model_card(model, saved),
    }
    return {name: data.encode("utf-8") if isinstance(data, str) else data for name, data in files.items()}
