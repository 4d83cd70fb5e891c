"""Config validation (one line naming field, value and what is allowed), overrides, hashing."""

import dataclasses
import json
import math
from typing import Any

import pytest

from worm_tune.config import (
    AFTER_SEARCH_FIELDS,
    CHOICES,
    CNN_ONLY_FIELDS,
    EXECUTION_FIELDS,
    ROLES,
    RUNTIME_FIELDS,
    SEARCH_DECISION_FIELDS,
    SPEC,
    TRAINING_FIELDS,
    TRUNCATION_FIELDS,
    ConfigError,
    Role,
    Spec,
    TrialConfig,
    field_types,
)
from worm_tune.config.hashing import config_hash
from worm_tune.legacy import ALWAYS_HASHED


def test_defaults_follow_the_paper_and_validate() -> None:
    cfg = TrialConfig().validate()
    assert (cfg.search.window, cfg.search.threshold) == (5, 0.1)
    assert (cfg.worm.delta, cfg.worm.factor, cfg.worm.scope) == (0.05, 0.003, "bn")
    assert (cfg.optim.optimizer, cfg.optim.lr, cfg.optim.momentum) == ("sgd", 0.01, 0.9)
    assert (cfg.data.batch_size, cfg.data.augment) == (32, False)
    assert (cfg.model.arch, cfg.model.stem, cfg.retrain.target_acc) == ("resnet18", "imagenet", 0.9)


@pytest.mark.parametrize(
    "key, value, allowed",
    [
        ("search.ratio", "0", "(0, 1)"),
        ("search.ratio", "1", "(0, 1)"),
        ("search.ratio", "1.5", "(0, 1)"),
        ("search.window", "1", ">= 2"),
        ("search.threshold", "0", "(0, 1)"),
        ("search.threshold", "-0.1", "(0, 1)"),
        ("search.threshold", "2", "(0, 1)"),
        ("search.threshold", "1", "(0, 1)"),
        ("search.max_epochs", "0", ">= 1"),
        ("worm.factor", "1.01", "[0, 1]"),
        ("worm.factor", "-0.1", "[0, 1]"),
        ("worm.delta", "-0.01", "(0, 1)"),
        ("worm.delta", "0", "(0, 1)"),
        ("worm.delta", "1.5", "(0, 1)"),
        ("seed", "99999999999999999999", "[0, 18446744073709551615]"),
        ("worm.scope", "conv", "bn, channel"),
        ("method", "lottery", "earlybird, worm, gradclip, greedy, dense"),
        ("model.arch", "resnet50", "resnet18, vgg11_bn, vgg16_bn"),
        ("model.stem", "tiny", "imagenet, cifar"),
        ("data.dataset", "mnist", "cifar10, cifar100, digits"),
        ("data.batch_size", "0", ">= 1"),
        ("prune.kind", "magic", "unstructured, structured"),
        ("retrain.target_acc", "90", "(0, 1]"),
        ("retrain.init", "random", "searched, reinit"),
        ("optim.lr", "0", "> 0"),
        ("optim.momentum", "1", "[0, 1)"),
        ("seed", "-1", "[0, 18446744073709551615]"),
        ("device", "tpu", "auto, cpu, cuda"),
    ],
)
def test_bad_values_name_field_value_and_allowed(key: str, value: str, allowed: str) -> None:
    with pytest.raises(ConfigError) as err:
        TrialConfig().replace({key: value}).validate()
    msg = str(err.value)
    assert "\n" not in msg
    assert key in msg and value in msg and allowed in msg


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("search.ratio", "abc", "must be a number"),
        ("search.window", "2.5", "must be an integer"),
        ("data.augment", "maybe", "true or false"),
        ("search.ratio", "nan", "finite"),
    ],
)
def test_unparseable_values(key: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        TrialConfig().replace({key: value})


def test_unknown_key_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown config key 'search\.ratoi'.*search\.ratio"):
        TrialConfig().replace({"search.ratoi": "0.5"})


def test_string_overrides_are_parsed_by_type() -> None:
    cfg = TrialConfig().replace(
        {"search.ratio": "0.7", "search.window": "3", "data.augment": "yes", "method": "worm", "seed": "4"}
    )
    assert cfg.search.ratio == 0.7 and cfg.search.window == 3 and cfg.data.augment is True
    assert cfg.method == "worm" and cfg.seed == 4
    assert TrialConfig().replace({"search.window": 4.0}).search.window == 4


def test_hash_is_stable_and_ignores_runtime_fields() -> None:
    a = TrialConfig()
    assert a.hash() == TrialConfig().hash() and len(a.hash()) == 12
    assert a.replace({"data.data_dir": "/elsewhere", "device": "cpu", "data.download": "true"}).hash() == a.hash()
    assert a.replace({"seed": "1"}).hash() != a.hash()
    assert a.replace({"worm.factor": "0.01"}).hash() != a.hash()


def test_flat_round_trip_and_files(tmp_path) -> None:
    cfg = TrialConfig().replace({"method": "worm", "search.ratio": "0.3", "data.dataset": "digits"})
    assert TrialConfig.from_dict(cfg.to_flat()) == cfg
    assert TrialConfig.from_dict(cfg.to_dict()) == cfg
    (tmp_path / "c.json").write_text(json.dumps(cfg.to_dict()))
    assert TrialConfig.from_file(tmp_path / "c.json") == cfg
    (tmp_path / "c.toml").write_text('method = "worm"\n[search]\nratio = 0.3\n[data]\ndataset = "digits"\n')
    assert TrialConfig.from_file(tmp_path / "c.toml") == cfg


def test_bad_files(tmp_path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        TrialConfig.from_file(tmp_path / "missing.toml")
    (tmp_path / "c.yaml").write_text("a: 1")
    with pytest.raises(ConfigError, match="unknown type"):
        TrialConfig.from_file(tmp_path / "c.yaml")
    (tmp_path / "c.json").write_text("{not json")
    with pytest.raises(ConfigError, match="cannot be parsed"):
        TrialConfig.from_file(tmp_path / "c.json")
    (tmp_path / "d.json").write_text('{"serach": {"ratio": 0.5}}')
    with pytest.raises(ConfigError, match="unknown config section 'serach'"):
        TrialConfig.from_file(tmp_path / "d.json")


def _with(key: str, value: Any) -> TrialConfig:
    """The default config with one raw value set, past the parsing of ``replace``: the validator alone sees it."""
    section, _, name = key.rpartition(".")
    cfg = TrialConfig()
    if not section:
        return dataclasses.replace(cfg, **{name: value})
    return dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section), **{name: value})})


def test_every_field_declares_a_spec_with_a_one_line_help() -> None:
    leaves = []
    for f in dataclasses.fields(TrialConfig):
        section = getattr(TrialConfig(), f.name)
        if dataclasses.is_dataclass(section):
            leaves += [(f"{f.name}.{sf.name}", sf) for sf in dataclasses.fields(section)]
        else:
            leaves.append((f.name, f))
    assert [key for key, _ in leaves] == list(field_types())
    for key, f in leaves:
        spec = f.metadata.get(SPEC)
        assert isinstance(spec, Spec), key
        assert spec.help.strip() and "\n" not in spec.help, key
        roles = f.metadata.get(ROLES)
        assert isinstance(roles, Role), key


def test_the_lists_of_fields_follow_the_roles_the_fields_declare() -> None:
    """Written out here, not read from the schema: a role dropped from a field fails a test."""
    assert {"data.data_dir", "data.download", "device", "threads", "crash_at_epoch"} == RUNTIME_FIELDS
    assert EXECUTION_FIELDS == ("speed.loader", "speed.precision", "speed.channels_last", "speed.compile")
    assert SEARCH_DECISION_FIELDS == (
        "method",
        "search.ratio",
        "search.window",
        "search.threshold",
        "search.rules",
        "worm.delta",
        "worm.factor",
        "worm.scope",
        "worm.apply",
    )
    after = ("prune.kind", "retrain.max_epochs", "retrain.target_acc", "retrain.init", "retrain.stop_at_target")
    assert after == AFTER_SEARCH_FIELDS
    assert set(field_types()) - {*SEARCH_DECISION_FIELDS, *after} == TRAINING_FIELDS
    assert set(CNN_ONLY_FIELDS) == {"model.stem", "worm.scope", "search.l1", "retrain.init"}
    assert TRUNCATION_FIELDS == ("worm.delta", "worm.factor", "worm.scope", "worm.apply")


def test_choices_lists_the_choice_fields_only() -> None:
    assert CHOICES["worm.scope"] == ("bn", "channel") and CHOICES["method"][0] == "earlybird"
    assert "seed" not in CHOICES and "data.data_dir" not in CHOICES


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("method", "lottery", "method='lottery' is invalid: must be one of earlybird, worm, gradclip, greedy, dense"),
        ("search.ratio", 0.0, "search.ratio=0.0 is invalid: must be a number in (0, 1)"),  # open low end
        ("search.ratio", 1.0, "search.ratio=1.0 is invalid: must be a number in (0, 1)"),  # open high end
        ("worm.factor", -0.1, "worm.factor=-0.1 is invalid: must be a number in [0, 1]"),  # closed ends
        ("worm.factor", 1.01, "worm.factor=1.01 is invalid: must be a number in [0, 1]"),
        ("optim.momentum", 1.0, "optim.momentum=1.0 is invalid: must be a number in [0, 1)"),
        ("retrain.target_acc", 0.0, "retrain.target_acc=0.0 is invalid: must be a fraction in (0, 1]"),
        ("optim.lr", 0.0, "optim.lr=0.0 is invalid: must be a number > 0"),
        ("optim.lr", math.inf, "optim.lr=inf is invalid: must be a number > 0"),
        ("search.l1", -0.5, "search.l1=-0.5 is invalid: must be a number >= 0"),
        ("worm.delta", "0.1", "worm.delta='0.1' is invalid: must be a number in (0, 1)"),  # a number, not text
        ("search.window", 1, "search.window=1 is invalid: must be an integer >= 2"),
        ("search.window", 3.0, "search.window=3.0 is invalid: must be an integer >= 2"),  # integer-ness
        ("data.batch_size", True, "data.batch_size=True is invalid: must be an integer >= 1"),  # a bool is no count
        ("threads", -1, "threads=-1 is invalid: must be an integer >= 0"),
        (
            "seed",
            2**64,
            "seed=18446744073709551616 is invalid: "
            "must be an integer in [0, 18446744073709551615] (what torch accepts)",
        ),
    ],
)
def test_the_validator_rejects_each_kind_of_constraint_in_one_exact_line(key: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        _with(key, value).validate()
    assert str(err.value) == message


@pytest.mark.parametrize(
    "key, value",
    [
        ("worm.factor", 0.0),
        ("worm.factor", 1.0),
        ("optim.momentum", 0.0),
        ("retrain.target_acc", 1.0),
        ("search.l1", 0),
        ("search.window", 2),
        ("seed", 2**64 - 1),
        ("speed.compile", "max-autotune"),
        ("data.data_dir", "/anywhere"),
    ],
)
def test_closed_ends_and_free_fields_are_accepted(key: str, value: Any) -> None:
    assert _with(key, value).validate().get(key) == value


#: ``TrialConfig.hash()`` of two configs, computed before the constraints moved into field metadata:
#: a hash names run folders and MLflow runs, so a refactor of the config must leave it alone.
PINNED_HASHES = [
    ({}, "e44c9be61f54"),
    (
        {
            "method": "worm",
            "seed": "7",
            "data.dataset": "digits",
            "model.stem": "cifar",
            "search.ratio": "0.3",
            "worm.factor": "0.01",
            "speed.precision": "fp32",
            "optim.optimizer": "adamw",
        },
        "5efbddad87ed",
    ),
    ({"model.arch": "bert", "data.dataset": "sst2", "model.checkpoint": "bert-base-uncased"}, "1d64dc328e8b"),
]


@pytest.mark.parametrize("overrides, expected", PINNED_HASHES)
def test_hashes_are_pinned(overrides: dict[str, str], expected: str) -> None:
    assert TrialConfig().replace(overrides).validate().hash() == expected


def test_the_always_hashed_keys_are_fields_that_say_what_a_trial_computes() -> None:
    assert set(field_types()) - RUNTIME_FIELDS >= ALWAYS_HASHED


def test_a_new_field_enters_the_hash_only_away_from_its_default() -> None:
    """A field not in the frozen :data:`~worm_tune.legacy.ALWAYS_HASHED` (every field added from now
    on) leaves the hash of a config at its default alone; an always-hashed one counts at any value."""
    flat, defaults = TrialConfig().to_flat(), TrialConfig().to_flat()
    before = config_hash(flat, defaults, RUNTIME_FIELDS)
    assert before == TrialConfig().hash()
    grown = {**defaults, "search.new_knob": 0.25}
    assert config_hash({**flat, "search.new_knob": 0.25}, grown, RUNTIME_FIELDS) == before
    assert config_hash({**flat, "search.new_knob": 0.5}, grown, RUNTIME_FIELDS) != before
    assert config_hash({**flat, "device": "cpu"}, defaults, RUNTIME_FIELDS) == before
    without_seed = {k: v for k, v in flat.items() if k != "seed"}
    assert config_hash(without_seed, defaults, RUNTIME_FIELDS) != before
