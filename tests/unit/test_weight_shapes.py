"""model.weight_shapes: the names and shapes of a config's weights, without building the model."""

import pytest

from model import GPT, GPTConfig, weight_shapes


@pytest.mark.parametrize("config", [GPTConfig(), GPTConfig(vocab_size=3, block_size=7, n_layer=1, n_head=2, n_embd=6),
                                    GPTConfig(n_layer=2, n_embd=64, mlp_ratio=2)])
def test_the_shapes_are_those_of_the_models_state_dict_in_its_order(config):
    built = {name: tuple(tensor.shape) for name, tensor in GPT(config).state_dict().items()}
    assert list(weight_shapes(config).items()) == list(built.items())


def test_a_config_far_too_large_to_build_still_answers():
    shapes = weight_shapes(GPTConfig(n_embd=100_000, n_head=1))
    assert shapes["blocks.3.mlp.fc.weight"] == (400_000, 100_000)
