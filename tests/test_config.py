"""TrainConfig: presets by field name, _updated(), validate(), and the CLI's defaults built on them."""
import dataclasses

import pytest

from vicreg.core.config import AugmentConfig, LossConfig, ModelConfig, TrainConfig
from vicreg.core.presets import PRESETS
from vicreg.orchestration.cli import CONFIG_OPTIONS, build_parser
from vicreg.orchestration.cli import train_config as _config


def test_presets_are_keyed_by_config_fields_and_name_their_run():
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert {"quick_demo", "cpu30", "full"} <= set(PRESETS)
    for name, overrides in PRESETS.items():
        assert set(overrides) <= fields, name
        cfg = TrainConfig.from_preset(name)
        assert cfg.name == name
        for key, value in overrides.items():
            if isinstance(value, dict):  # a nested config: only the fields it names change
                for sub, v in value.items():
                    assert getattr(getattr(cfg, key), sub) == v, (name, key, sub)
            else:
                assert getattr(cfg, key) == value, (name, key)
        cfg.validate()
    cpu30 = TrainConfig.from_preset("cpu30")
    assert (cpu30.optimizer, cpu30.lr, cpu30.batch_size, cpu30.epochs, cpu30.train_subset, cpu30.warmup_epochs) == (
        "adamw", 2e-3, 64, 2, 42000, 0.1)
    # "full" is the defaults under its own name
    assert TrainConfig.from_preset("full") == dataclasses.replace(TrainConfig(), name="full")


def test_from_preset_overrides_win_and_unknown_names_are_refused():
    cfg = TrainConfig.from_preset("cpu30", epochs=5, name="mine", loss={"var_coeff": 0.0})
    assert (cfg.epochs, cfg.name, cfg.optimizer, cfg.loss.var_coeff, cfg.loss.inv_coeff) == (
        5, "mine", "adamw", 0.0, 25.0)
    with pytest.raises(ValueError, match="unknown preset 'nope'"):
        TrainConfig.from_preset("nope")


def test_updated_copies_and_merges_nested_dicts():
    base = TrainConfig()
    new = base._updated({"batch_size": 32, "model": {"projector": "64-64"}, "augment": {"view_size": 24}})
    assert (new.batch_size, new.model.projector, new.augment.view_size) == (32, "64-64", 24)
    assert new.model.backbone_dim == 512 and new.augment.size == 32  # untouched nested fields kept
    assert (base.batch_size, base.model.projector, base.augment.view_size) == (128, "2048-2048-2048", 0)  # a copy
    assert isinstance(new.augment.scale, tuple) and new.augment.scale == (0.2, 1.0)
    with pytest.raises(ValueError, match="unknown config field 'batch'"):
        base._updated({"batch": 3})
    with pytest.raises(ValueError, match="unknown loss field"):
        base._updated({"loss": {"lambda": 3}})


def test_dict_round_trip_is_lossless():
    cfg = TrainConfig(epochs=3, lr=0.01, train_subset=100, model=ModelConfig("32-16"), loss=LossConfig(1, 2, 3),
                      augment=AugmentConfig(view_size=16, jitter=(0.1, 0.2, 0.3, 0.04)))
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    narrow = cfg._updated({"model": {"width": 16}})
    assert TrainConfig.from_dict(narrow.to_dict()).model == ModelConfig("32-16", width=16)
    assert narrow.model.backbone_dim == 128


def test_a_checkpoint_written_before_the_width_knob_reads_as_resnet18():
    """Older checkpoints stored the backbone's 512 output features rather than its width: they are ResNet-18."""
    old = TrainConfig.from_dict({"epochs": 3, "model": {"projector": "32-16", "backbone_dim": 512}})
    assert old.model == ModelConfig("32-16", width=64) and old.model.backbone_dim == 512


@pytest.mark.parametrize("overrides,words", [
    ({"loss": {"var_coeff": -1.0}}, "loss weights must be 0 or positive, got invariance 25.0, variance -1.0, "
                                    "covariance 1.0"),
    ({"lr": 0.0}, "lr must be positive"),
    ({"lr": -1e-3}, "lr must be positive"),
    ({"train_subset": -5}, "train_subset must be 0 (all images) or more, got -5"),
    ({"warmup_epochs": -0.5}, "warmup_epochs must be 0 or more, got -0.5"),
    ({"save_every": -1.0}, "save_every must be 0 (every epoch) or a number of seconds, got -1.0"),
    ({"augment": {"view_size": 33}}, "augment.view_size must be 0 (= size) or at most 32, got 33"),
    ({"augment": {"view_size": -1}}, "augment.view_size must be 0"),
    ({"epochs": 0}, "epochs must be at least 1"),
    ({"batch_size": 1}, "batch_size must be at least 2"),
    ({"optimizer": "sgd"}, "optimizer must be 'lars' or 'adamw'"),
    ({"precision": "fp16"}, "precision must be auto, bf16 or fp32"),
    ({"model": {"projector": "2048-0"}}, "projector widths must be positive"),
    ({"model": {"width": 0}}, "model.width must be a positive number of channels (64: ResNet-18), got 0"),
])
def test_validate_refuses_bad_values_with_words_that_say_why(overrides, words):
    with pytest.raises(ValueError) as e:
        TrainConfig()._updated(overrides).validate()
    assert words in str(e.value)


def test_validate_accepts_the_edges():
    TrainConfig()._updated({"loss": {"inv_coeff": 0.0, "var_coeff": 0.0, "cov_coeff": 0.0}, "train_subset": 0,
                           "warmup_epochs": 0.0, "augment": {"view_size": 32}}).validate()


def test_cli_defaults_are_none_so_that_they_come_from_trainconfig():
    args = build_parser().parse_args(["TRAIN"])
    for opt in [*CONFIG_OPTIONS, "compile", "preset", "model_path"]:
        assert getattr(args, opt) is None, opt
    assert _config(args) == TrainConfig()
    given = build_parser().parse_args(["TRAIN", "--data", "/some/data", "--checkpoint_dir", "/some/ckpts"])
    assert _config(given) == TrainConfig(data="/some/data", checkpoint_dir="/some/ckpts")


def test_cli_options_map_onto_config_fields():
    args = build_parser().parse_args(["TRAIN", "--epochs", "7", "--projector", "64-32", "--var_coeff", "0",
                                      "--view_size", "24", "--train_subset", "0", "--compile", "--lr", "0.05"])
    cfg = _config(args)
    assert (cfg.epochs, cfg.model.projector, cfg.loss.var_coeff, cfg.augment.view_size, cfg.compile, cfg.lr) == (
        7, "64-32", 0.0, 24, True, 0.05)
    assert cfg.train_subset is None  # 0 means all images
    assert (cfg.loss.inv_coeff, cfg.batch_size, cfg.optimizer) == (25.0, 128, "lars")  # the rest: TrainConfig()


def test_a_preset_plus_an_explicit_option_the_option_wins():
    cfg = _config(build_parser().parse_args(["TRAIN", "--preset", "cpu30", "--epochs", "3", "--optimizer", "lars"]))
    assert (cfg.epochs, cfg.optimizer) == (3, "lars")  # given
    assert (cfg.lr, cfg.batch_size, cfg.train_subset, cfg.warmup_epochs, cfg.name) == (2e-3, 64, 42000, 0.1, "cpu30")
    assert _config(build_parser().parse_args(["TRAIN", "--preset", "cpu30", "--name", "x"])).name == "x"


def test_cli_and_validate_refuse_a_negative_weight_with_the_same_words():
    with pytest.raises(ValueError) as direct:
        TrainConfig(loss=LossConfig(cov_coeff=-2.0)).validate()
    with pytest.raises(ValueError) as via_cli:
        _config(build_parser().parse_args(["TRAIN", "--cov_coeff", "-2"]))
    assert str(direct.value) == str(via_cli.value)
    assert str(direct.value) == ("loss weights must be 0 or positive, got invariance 25.0, variance 25.0, "
                                 "covariance -2.0")
