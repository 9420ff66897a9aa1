"""trainer.config in-process: recipes, the two types, the min_lr rule, limits and the parser's flags."""

from dataclasses import fields

import pytest

from common.cli import UsageError
from trainer.config import (
    RECIPE_FIELDS,
    RECIPES,
    RunOptions,
    TrainConfig,
    build_parser,
    check_run_length,
    parse,
    read_command_line,
    resolve,
)
from trainer.resume import flags


def parse_config(argv: list[str]) -> TrainConfig:
    return parse(argv)[0]


def parse_options(argv: list[str]) -> RunOptions:
    return parse(argv)[1]


def test_defaults_are_the_muon_recipe():
    cfg = parse_config([])
    assert cfg.recipe == "muon" and cfg.muon_lr > 0
    assert {name: getattr(cfg, name) for name in RECIPE_FIELDS} == RECIPES["muon"]
    assert parse_options([]).command_line == {}


def test_the_adamw_recipe_is_adamw_alone_warmed_up_and_cosine():
    cfg = parse_config(["--recipe", "adamw"])
    assert (cfg.muon_lr, cfg.lr, cfg.min_lr, cfg.schedule, cfg.warmup_steps) == (0.0, 2e-3, 1e-4, "cosine", 100)


def test_an_explicit_flag_beats_the_recipe():
    cfg = parse_config(["--recipe", "course", "--dropout", "0.1"])
    assert (cfg.lr, cfg.min_lr, cfg.schedule, cfg.warmup_steps) == (3e-4, 3e-4, "constant", 0)
    assert (cfg.beta2, cfg.weight_decay, cfg.grad_clip, cfg.dropout, cfg.muon_lr) == (0.999, 0.0, 0.0, 0.1, 0.0)
    assert parse_config(["--lr", "0.01"]).lr == 0.01
    assert parse_config(["--recipe", "course", "--lr", "0.01"]).lr == 0.01


def test_the_command_line_holds_the_flags_given_only_and_each_type_its_own_fields():
    cfg, options = resolve(read_command_line(["--recipe", "course", "--steps", "3000", "--no-export", "--resume",
                                              "--n-layer", "2"]))
    # --steps at its default still counts
    assert set(options.command_line) == {"recipe", "steps", "export", "resume", "n_layer"}
    assert options.export is False and options.resume == "" and cfg.n_layer == 2
    train_fields, option_fields = {f.name for f in fields(TrainConfig)}, {f.name for f in fields(RunOptions)}
    assert not train_fields & option_fields and {"steps", "sample_prompt", "seed"} <= train_fields
    assert {"out", "data", "dtype", "resume", "timeout", "grad_compression"} <= option_fields


def test_a_low_lr_alone_lowers_min_lr_to_it():
    assert parse_config(["--lr", "5e-5"]).min_lr == 5e-5
    assert parse_config(["--lr", "5e-3"]).min_lr == 1e-4
    with pytest.raises(UsageError, match="^--min-lr 0.0001 is above --lr 5e-05"):
        parse_config(["--lr", "5e-5", "--min-lr", "1e-4"])


@pytest.mark.parametrize("argv, message", [
    (["--steps", "0"], "--steps must be at least 1, got 0"),
    (["--timeout", "-2"], "--timeout must be a whole number from 1 to 31536000, got -2"),
    (["--timeout", str(10 ** 15)], "--timeout must be a whole number from 1 to 31536000, got 1000000000000000"),
    (["--seed", str(2 ** 70)], f"--seed must be a whole number from 0 to {2 ** 64 - 1}, got {2 ** 70}"),
    (["--seed", "-1"], f"--seed must be a whole number from 0 to {2 ** 64 - 1}, got -1"),
    (["--save-every", "-1"], "--save-every must not be negative"),
    (["--block-size", "1"], "--block-size must be at least 2 (a 1-character context cannot be exported): "
                            "e.g. --block-size 128"),
    (["--lr", "nan"], "--lr must be a finite number in (0, 1], got nan: e.g. --lr 0.002"),
    (["--lr", "0"], "--lr must be a finite number in (0, 1], got 0.0: e.g. --lr 0.002"),
    (["--beta2", "1"], "--beta2 must be a finite number in [0, 1), got 1.0: e.g. --beta2 0.99"),
    (["--grad-clip", "inf"], "--grad-clip must be a finite number in [0, inf), got inf: e.g. --grad-clip 1"),
    (["--recipe", "plain"], "argument --recipe: invalid choice: 'plain' (choose from 'muon', 'adamw', 'course') "
                            "(see python -m trainer --help)"),
    (["--grad-compression", "fp8"], "argument --grad-compression: invalid choice: 'fp8' (choose from 'none', 'bf16') "
                                    "(see python -m trainer --help)"),
    (["--extend", "--resume"], "--extend changes the length of a resumed run: use it with --resume and --steps N"),
])
def test_limits_are_one_line_errors(argv, message):
    """The problem, up to the colon before the fix, word for word; the fix may be reworded."""
    with pytest.raises(UsageError) as caught:
        parse_config(argv)
    assert str(caught.value).split(":")[0] == message.split(":")[0]


def test_every_field_has_a_flag_with_the_fields_default():
    actions = {action.dest: action for action in build_parser()._actions if action.dest != "help"}
    defaults = {f.name: f.default for cls in (TrainConfig, RunOptions) for f in fields(cls) if f.name != "command_line"}
    assert sorted(actions) == sorted(defaults)
    for name in defaults:
        default = None if name in RECIPE_FIELDS else defaults[name]  # None: the recipe decides
        assert actions[name].default == default, name
    assert actions["export"].option_strings == ["--no-export"] and actions["export"].const is False
    assert sorted(RECIPES) == sorted(actions["recipe"].choices)


def test_each_recipe_sets_its_values_and_passes_the_checks():
    for recipe, values in RECIPES.items():
        cfg = parse_config(["--recipe", recipe])
        assert {name: getattr(cfg, name) for name in values} == values


# -- resolve: command line over checkpoint over recipe over default ------------------------------


def test_resolve_puts_the_command_line_over_the_checkpoint_over_the_recipe_over_the_default():
    saved = {"steps": 500, "lr": 1e-3, "seed": 7, "n_layer": 2, "muon_lr": 0.01}
    cfg, options = resolve({"seed": 9, "out": "runs"}, saved)
    assert (cfg.seed, options.out) == (9, "runs")  # the command line
    assert (cfg.steps, cfg.lr, cfg.n_layer, cfg.muon_lr) == (500, 1e-3, 2, 0.01)  # the checkpoint
    assert cfg.muon_weight_decay == RECIPES["muon"]["muon_weight_decay"]  # the recipe
    assert cfg.eval_iters == TrainConfig.eval_iters  # the default
    assert options.command_line == {"seed": 9, "out": "runs"}


def test_resolve_restores_train_configs_fields_and_ignores_the_other_keys_of_older_checkpoints():
    cfg, options = resolve({}, {"out": "elsewhere", "dtype": "bf16", "export": False, "steps": 40})
    assert (options.out, options.dtype, options.export, cfg.steps) == (RunOptions.out, RunOptions.dtype, True, 40)
    assert sorted(cfg.to_dict()) == sorted(f.name for f in fields(TrainConfig))


def test_gradient_compression_is_this_invocations_own_not_the_checkpoints():
    # The link a run is on belongs to where it runs now: a resume on a fast network drops it
    # unless the command line (as the printed resume command does) gives it again.
    assert resolve({}, {"grad_compression": "bf16", "steps": 40})[1].grad_compression == "none"
    command_line = read_command_line(["--grad-compression", "bf16"])
    assert flags(command_line) == ["--grad-compression", "bf16"]
    assert resolve(command_line, {"grad_compression": "none"})[1].grad_compression == "bf16"


def test_a_recipe_on_the_command_line_beats_the_checkpoints_recipe_fields():
    saved = {"recipe": "muon", "muon_lr": 0.02, "lr": 2e-3, "steps": 40}
    cfg, _ = resolve({"recipe": "course"}, saved)
    assert (cfg.recipe, cfg.muon_lr, cfg.lr, cfg.steps) == ("course", 0.0, 3e-4, 40)
    assert resolve({}, {"recipe": "adamw", "muon_lr": 0.0})[0].recipe == "adamw"


def test_the_embeddings_own_rate_is_the_muon_recipes():
    assert (parse([])[0].embed_lr, parse(["--recipe", "adamw"])[0].embed_lr) == (6e-3, 0.0)


def test_the_checkpoints_values_are_checked_too():
    with pytest.raises(UsageError, match="^--n-embd 10 is not a multiple of --n-head 4"):
        resolve({}, {"n_embd": 10})


def test_the_flags_of_a_command_line_give_it_back():
    command_line = read_command_line(["--out", "a b", "--resume", "--lr", "1e-3", "--no-export",
                                      "--sample-prompt", "JULIET:"])
    assert flags(command_line) == ["--out", "a b", "--resume", "--lr", "0.001", "--sample-prompt", "JULIET:",
                                   "--no-export"]
    assert read_command_line(flags(command_line)) == command_line


class Corpus:
    vocab = "\n ,abehinoqrstu"

    def start(self, length: int) -> str:
        return "to be or not"[:length]


def test_resolve_settles_the_sample_prompt_on_the_corpus():
    cfg, _ = resolve({}, None, Corpus())
    assert cfg.sample_prompt == "to be "  # the default's length, from the corpus's start
    assert resolve({"sample_tokens": 0}, None, Corpus())[0].sample_prompt == TrainConfig.sample_prompt
    assert resolve({}, {"sample_prompt": "to be", "steps": 40}, Corpus())[0].sample_prompt == "to be"
    with pytest.raises(UsageError, match="^--sample-prompt 'ROMEO:' has characters the corpus lacks"):
        resolve({"sample_prompt": "ROMEO:"}, None, Corpus())


# Flags whose value was silently changed, ignored or misnamed.
@pytest.mark.parametrize("argv, words", [
    (["--muon-lr", "1e-400"], "--muon-lr: 1e-400 is too small for a float (it would be 0)"),
    (["--lr", "0.0x"], "--lr: invalid float value: '0.0x'"),
    (["--schedule", "wsd", "--lr", "0.1", "--min-lr", "0.5"], "the wsd schedule decays"),
    (["--out", ""], "--out is empty"),
])
def test_a_flag_value_that_would_be_changed_or_misnamed_is_one_line(argv, words):
    with pytest.raises(UsageError, match=words.replace("(", r"\(").replace(")", r"\)")):
        parse_config(argv)


def test_help_shows_no_default_for_a_switch():
    assert "(default: True)" not in build_parser().format_help()


def test_extend_below_the_checkpoints_step_names_the_step():
    cfg, options = resolve(read_command_line(["--resume", "--steps", "40", "--extend"]))
    with pytest.raises(UsageError, match="is at step 60, past --steps 40"):
        check_run_length(cfg, options.extend, {"steps": 100}, 60, "model.pt")
