"""Search spaces: the shipped files, grid expansion, method-specific axes, pinning, bad files."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from worm_tune.config import TrialConfig
from worm_tune.tune.spaces import Objective, SpaceError, available_spaces, load_space

SHIPPED = ("resnet18", "vgg11_bn", "vgg16_bn")


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "space.toml"
    path.write_text(text)
    return str(path)


def test_every_experiment_has_a_space() -> None:
    assert set(SHIPPED) <= set(available_spaces())


@pytest.mark.parametrize("name", SHIPPED)
def test_default_profile_is_the_papers_cifar10_protocol(name: str) -> None:
    space = load_space(name)
    base = space.base
    assert (base.model.arch, base.data.dataset, base.model.pretrained) == (name, "cifar10", True)
    assert (base.optim.lr, base.optim.momentum, base.data.batch_size, base.search.window) == (0.01, 0.9, 32, 5)
    grid = space.grid()
    swept = {
        k
        for k in ("search.ratio", "search.threshold", "worm.delta", "worm.factor")
        if k in space.axes or k in space.method_axes.get("worm", {})
    }
    assert swept == {"search.ratio", "search.threshold", "worm.delta", "worm.factor"}
    assert len({cfg.hash() for cfg in grid}) == len(grid)


@pytest.mark.parametrize("name", SHIPPED)
def test_method_axes_do_not_duplicate_earlybird_trials(name: str) -> None:
    space = load_space(name)
    grid = space.grid()
    by_method = Counter(cfg.method for cfg in grid)
    shared = 1
    for values in space.axes.values():
        shared *= len(values)
    worm_only = 1
    for values in space.method_axes["worm"].values():
        worm_only *= len(values)
    assert by_method == {"earlybird": shared, "worm": shared * worm_only}
    # EarlyBird trials all keep WORM's defaults: nothing but the shared axes varies among them.
    assert {(c.worm.delta, c.worm.factor) for c in grid if c.method == "earlybird"} == {(0.05, 0.003)}


@pytest.mark.parametrize("name", SHIPPED)
def test_every_worm_trial_has_an_earlybird_pair_with_its_seed(name: str) -> None:
    grid = load_space(name, "quick").grid()
    eb = {(c.seed, c.search.ratio, c.search.threshold) for c in grid if c.method == "earlybird"}
    worm = {(c.seed, c.search.ratio, c.search.threshold) for c in grid if c.method == "worm"}
    assert worm == eb and len({s for s, *_ in eb}) >= 2


@pytest.mark.parametrize("name", SHIPPED)
def test_quick_profile_runs_offline_on_digits_with_small_budgets(name: str) -> None:
    space = load_space(name, "quick")
    grid = space.grid()
    assert all(c.data.dataset == "digits" and not c.model.pretrained for c in grid)
    assert all(c.search.max_epochs <= 16 and c.retrain.max_epochs <= 2 for c in grid)
    assert 4 <= len(grid) <= 18
    assert space.optuna is not None and space.optuna.num_samples <= 8


def test_pin_fixes_a_field_and_removes_its_axis() -> None:
    space = load_space("resnet18", "quick").pin({"search.ratio": "0.7", "seed": "4", "worm.delta": "0.02"})
    grid = space.grid()
    assert {c.search.ratio for c in grid} == {0.7} and {c.seed for c in grid} == {4}
    assert Counter(c.method for c in grid) == {"earlybird": 1, "worm": 1} and {c.worm.delta for c in grid} == {0.02}
    only_worm = load_space("resnet18", "quick").pin({"method": "worm"}).grid()
    assert {c.method for c in only_worm} == {"worm"}


def test_optuna_table_is_parsed() -> None:
    optuna = load_space("resnet18").optuna
    assert optuna is not None and optuna.method == "worm"
    assert [str(o) for o in optuna.objectives] == ["search_epochs:min", "final_acc:max"]
    assert {p.key for p in optuna.params} == {"worm.delta", "worm.factor"}
    assert all(p.log and p.low < p.high for p in optuna.params)
    assert optuna.seeds == 6 and optuna.enqueue == ({"worm.delta": 0.05, "worm.factor": 0.003},)  # the paper's point


def test_objective_takes_the_metrics_natural_direction() -> None:
    assert Objective.parse("final_acc") == Objective("final_acc", "max")
    assert Objective.parse("search_epochs") == Objective("search_epochs", "min")
    with pytest.raises(SpaceError, match="metric must be one of"):
        Objective.parse("loss:min")
    with pytest.raises(SpaceError, match="mode must be min or max"):
        Objective.parse("final_acc:up")


def test_a_space_file_given_by_path(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'methods = ["earlybird", "gradclip"]\n[base]\n"data.dataset" = "digits"\n'
        '[axes]\nseed = [0, 1]\n[method_axes.gradclip]\n"worm.factor" = [0.5, 0.1]\n',
    )
    grid = load_space(path).grid()
    assert Counter(c.method for c in grid) == {"earlybird": 2, "gradclip": 4}
    assert all(isinstance(c, TrialConfig) and c.data.dataset == "digits" for c in grid)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nonsense = 1\n", "unknown key 'nonsense'"),
        ('[axes]\n"search.ratioo" = [0.5]\n', "is not a config key"),
        ('[axes]\n"search.ratio" = []\n', "must be a non-empty list"),
        ('[axes]\n"search.ratio" = [0.5, 1.5]\n', "search.ratio=1.5 is invalid"),
        ('[base]\n"model.arch" = "resnet50"\n', "model.arch"),
        ('methods = ["worm", "lottery"]\n', "method 'lottery' is invalid"),
        (
            'methods = ["earlybird"]\n[method_axes.worm]\n"worm.delta" = [0.1]\n',
            "names a method the space does not run",
        ),
        ('[axes]\nmethod = ["worm"]\n', "'methods' list"),
        ('[optuna]\nparams = { "model.arch" = { low = 1, high = 2 } }\n', "not a numeric config key"),
        ('[optuna]\nparams = { "worm.delta" = { low = 0.2, high = 0.1 } }\n', "needs low < high"),
        ('[optuna]\nobjective = "accuracy"\nparams = { "worm.delta" = { low = 0.1, high = 0.2 } }\n', "metric must be"),
        ('[optuna]\nseeds = 0\nparams = { "worm.delta" = { low = 0.1, high = 0.2 } }\n', r"optuna.seeds=0 is invalid"),
        (
            '[optuna]\nenqueue = [{ "worm.factor" = 0.1 }]\nparams = { "worm.delta" = { low = 0.1, high = 0.2 } }\n',
            "optuna.enqueue key 'worm.factor' is not tuned; tuned: worm.delta",
        ),
        (
            '[optuna]\nenqueue = [{ "worm.delta" = 0.5 }]\nparams = { "worm.delta" = { low = 0.1, high = 0.2 } }\n',
            r"optuna.enqueue worm.delta=0.5 is outside its range \[0.1, 0.2\]",
        ),
        ("[axes\n", "cannot be parsed"),
    ],
)
def test_bad_space_files_fail_with_one_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(SpaceError, match=message) as info:
        load_space(write(tmp_path, text))
    assert "\n" not in str(info.value)


def test_unknown_space_and_profile() -> None:
    with pytest.raises(SpaceError, match=r"unknown search space 'resnet50'; known spaces: .*resnet18"):
        load_space("resnet50")
    with pytest.raises(SpaceError, match="no profile 'huge'; profiles: default, quick"):
        load_space("resnet18", "huge")


@pytest.mark.parametrize("name", ["vit", "bert"])
def test_transformer_spaces_use_the_papers_transformer_settings(name: str) -> None:
    grid = load_space(name).grid()
    settings = {(c.search.window, c.search.threshold, c.worm.delta, c.search.ratio) for c in grid}
    assert settings == {(3, 0.01, 0.005, 0.5)}
    assert {c.model.arch for c in grid} == {name}
    eb = {(c.seed, c.data.dataset, c.prune.kind) for c in grid if c.method == "earlybird"}
    assert eb == {(c.seed, c.data.dataset, c.prune.kind) for c in grid if c.method == "worm"}
    if name == "bert":
        assert {c.data.dataset for c in grid} == {"sst2", "mrpc", "rte"} and {c.model.checkpoint for c in grid} == {
            "bert-base-uncased"
        }
    else:
        assert {c.prune.kind for c in grid} == {"unstructured", "structured"}
        quick = load_space(name, "quick").grid()
        assert all(c.data.dataset == "digits" and c.search.max_epochs <= 24 for c in quick)
        # Heads and weights as cases: each with its own s (and the heads' window 5), deltas and 4 paired seeds.
        by_kind = {k: [c for c in quick if c.prune.kind == k] for k in ("unstructured", "structured")}
        for kind, (window, s, deltas) in {
            "unstructured": (3, 0.016, {0.001, 0.003}),
            "structured": (5, 0.01, {0.04, 0.06}),
        }.items():
            cfgs = by_kind[kind]
            assert {(c.search.window, c.search.threshold) for c in cfgs} == {(window, s)}
            assert {c.worm.delta for c in cfgs if c.method == "worm"} == deltas
            assert Counter(c.method for c in cfgs) == {"earlybird": 4, "worm": 16}


CASES = """methods = ["earlybird", "worm"]
[base]
"data.dataset" = "digits"
"search.threshold" = 0.05
[axes]
seed = [0, 1]
"prune.kind" = ["unstructured", "structured"]
[method_axes.worm]
"worm.delta" = [0.01, 0.02]
"worm.factor" = [0.003]
[[cases]]
name = "weights"
base = { "prune.kind" = "unstructured" }
[[cases]]
name = "heads"
base = { "prune.kind" = "structured", "search.window" = 4, "search.threshold" = 0.02 }
axes = { "search.ratio" = [0.25, 0.5] }
method_axes = { worm = { "worm.delta" = [0.05] } }
"""


def test_cases_are_grids_of_their_own_laid_over_the_space(tmp_path: Path) -> None:
    space = load_space(write(tmp_path, CASES))
    assert [c.name for c in space.cases] == ["weights", "heads"]
    grid = space.grid()
    weights = [c for c in grid if c.prune.kind == "unstructured"]
    heads = [c for c in grid if c.prune.kind == "structured"]
    # The case's base wins over the space's axis of that key, and its axes over the space's.
    assert Counter(c.method for c in weights) == {"earlybird": 2, "worm": 4}
    assert {(c.search.window, c.search.threshold) for c in weights} == {(5, 0.05)}
    assert {c.worm.delta for c in weights if c.method == "worm"} == {0.01, 0.02}
    assert Counter(c.method for c in heads) == {"earlybird": 4, "worm": 4}
    assert {(c.search.window, c.search.threshold, c.search.ratio) for c in heads} == {
        (4, 0.02, 0.25),
        (4, 0.02, 0.5),
    }
    assert {c.worm.delta for c in heads if c.method == "worm"} == {0.05}
    # Every WORM trial has its EarlyBird pair within its case.
    key = lambda c: (c.seed, c.prune.kind, c.search.window, c.search.threshold, c.search.ratio)  # noqa: E731
    assert {key(c) for c in grid if c.method == "worm"} == {key(c) for c in grid if c.method == "earlybird"}


def test_pin_overrides_every_case(tmp_path: Path) -> None:
    grid = (
        load_space(write(tmp_path, CASES)).pin({"search.threshold": "0.03", "worm.delta": "0.04", "seed": "1"}).grid()
    )
    assert {c.search.threshold for c in grid} == {0.03} and {c.seed for c in grid} == {1}
    assert {c.worm.delta for c in grid if c.method == "worm"} == {0.04}
    assert Counter(c.method for c in grid) == {"earlybird": 3, "worm": 3}


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ('base = { "prune.kind" = "structured" }\n', "case 1 needs a name of its own"),
        (
            'name = "a"\nbase = { "prune.kindd" = "structured" }\n',
            "case 'a': base key 'prune.kindd' is not a config key",
        ),
        ('name = "a"\naxes = { seed = [3] }\n', "case 'a' sets 'seed': methods and seeds are the space's"),
        ('name = "a"\nbase = { "method" = "worm" }\n', "case 'a' sets 'method'"),
        ('name = "a"\nbase = { "search.window" = 4 }\naxes = { "search.window" = [4, 5] }\n', "both fixes and sweeps"),
        (
            'name = "a"\nmethod_axes = { gradclip = { "worm.factor" = [0.1] } }\n',
            "names a method the space does not run",
        ),
        ('name = "a"\nwindow = 4\n', "case 1: unknown key 'window'"),
        ('name = "a"\nbase = { "search.window" = 1 }\n', "search.window=1 is invalid"),
    ],
)
def test_bad_cases_fail_with_one_line(tmp_path: Path, case: str, message: str) -> None:
    with pytest.raises(SpaceError, match=message) as info:
        load_space(write(tmp_path, f'[base]\n"data.dataset" = "digits"\n[[cases]]\n{case}'))
    assert "\n" not in str(info.value)


def test_two_cases_of_the_same_name_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SpaceError, match="case 2 needs a name of its own"):
        load_space(write(tmp_path, '[[cases]]\nname = "a"\n[[cases]]\nname = "a"\n'))


def test_the_study_spaces_pair_every_variant_with_earlybird_on_their_seeds() -> None:
    """The ViT study (both cases, both apply modes, 12 seeds) and the pruning study (p = 0.1, 20 seeds)."""
    vit = load_space("vit_study").grid()
    assert Counter((c.method, c.prune.kind) for c in vit) == {
        ("earlybird", "unstructured"): 12,
        ("earlybird", "structured"): 12,
        ("worm", "unstructured"): 24,
        ("worm", "structured"): 24,
    }
    assert {(c.prune.kind, c.search.window, c.search.threshold, c.search.max_epochs) for c in vit} == {
        ("unstructured", 3, 0.016, 16),
        ("structured", 5, 0.01, 24),
    }
    quick = {c.hash() for c in load_space("vit", "quick").grid()}
    assert {c.hash() for c in vit if c.method == "worm" and c.seed < 4} <= quick  # the quick profile's WORM configs
    pruning = load_space("pruning_study").grid()
    assert {c.search.ratio for c in pruning} == {0.1} and Counter(c.method for c in pruning) == {
        "earlybird": 20,
        "worm": 20,
    }
