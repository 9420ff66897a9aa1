from model.gpt import GPT, GPTConfig, count_parameters, next_token_loss, uniform_loss, weight_shapes
from model.sample import generate

__all__ = ["GPT", "GPTConfig", "count_parameters", "generate", "next_token_loss", "uniform_loss", "weight_shapes"]
