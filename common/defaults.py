"""The file names and defaults every command agrees on, each written once.

The Makefile's PROMPT, TOKENS and TEMPERATURE and the self-contained export/onnx_generate.py
repeat three of them (make and a file that imports nothing from this project cannot import
these): tests/unit/test_defaults.py holds them equal.
"""

from pathlib import Path

CORPUS = Path("data/tinyshakespeare.txt")
CORPUS_HELP = f"UTF-8 corpus: a file, a folder or a glob pattern; default {CORPUS}, downloaded if missing"

# What a run leaves in its --out folder.
CHECKPOINT = "model.pt"  # the weights, the optimiser state and the settings: what --resume reads
METRICS = "metrics.jsonl"
LOSS_PLOT = "loss.png"
TENSORBOARD = "tensorboard"  # --tensorboard's folder
EXPORTS = ("model.ts", "model.pt2", "model.onnx")  # TorchScript, torch.export, ONNX
MANIFEST = "model.json"  # the vocabulary, the block size and the exports' SHA-256
HF_FOLDER = "hf"  # the Hugging Face folder (export/hf.py), beside the other exports
HF_CARD = "README.md"  # the model card: people edit it (before push_to_hub), so it is not hashed
HF_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "onnx/model.onnx", HF_CARD)  # inside HF_FOLDER
# What a model of the folder is made of: model.json holds their SHA-256, and every loader checks them.
HF_MODEL_FILES = tuple(name for name in HF_FILES if name != HF_CARD)
# What transformers.js reads of them (the page's hf Runtime): the ONNX decoder, not the safetensors.
HF_BROWSER_FILES = tuple(f"{HF_FOLDER}/{name}" for name in HF_MODEL_FILES if name != "model.safetensors")

# Generation: the prompt and length of a sample, and its temperature (0 = always the likeliest
# character), for every generator: the trainer's samples, make generate, the C++ program, the examples.
PROMPT = "ROMEO:"
TOKENS = 200
TEMPERATURE = 0.8
# The largest seed torch's generators take (64 bits, unsigned): --seed of the trainer and the generators.
MAX_SEED = 2 ** 64 - 1
