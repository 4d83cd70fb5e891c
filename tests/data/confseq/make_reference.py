"""How ``reference.json`` was made: the authors' own ``confseq.betting.betting_cs`` (confseq 0.0.11,
defaults) on a few fixed data sets in [0, 1], with and without the running intersection.
``tests/test_confseq.py`` checks that ``worm_tune.confseq.betting_cs`` reproduces it.

It needs the confseq 0.0.11 sdist unpacked (not a project dependency: installing it compiles C++);
only its pure-Python betting code is imported, straight from the source tree:

    python tests/data/confseq/make_reference.py /tmp/cs/confseq-0.0.11/src
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np

VERSION = "0.0.11"


def datasets() -> dict[str, np.ndarray]:
    """Fixed inputs: continuous, binary, on a lattice, and constant (where ties and a zero variance meet)."""
    rng = np.random.default_rng(0)
    return {
        "beta_2_5_n50": rng.beta(2, 5, size=50),
        "bernoulli_0.3_n40": rng.binomial(1, 0.3, size=40).astype(np.float64),
        "lattice_quarters_n30": rng.integers(0, 5, size=30) / 4,
        "constant_0.5_n20": np.full(20, 0.5),
    }


def import_reference(src: Path) -> types.ModuleType:
    """confseq.betting from the sdist's source tree, shimmed for what it imports but never uses here."""
    if "multiprocess" not in sys.modules:
        try:
            import multiprocess  # noqa: F401  (only for parallel=True)
        except ImportError:
            sys.modules["multiprocess"] = types.ModuleType("multiprocess")
    if not hasattr(np, "float_"):  # removed in numpy 2; its type hints still name it
        np.float_ = np.float64
    sys.path.insert(0, str(src))
    import confseq.betting

    return confseq.betting


def main() -> None:
    src = Path(sys.argv[1] if len(sys.argv) > 1 else f"/tmp/cs/confseq-{VERSION}/src")
    betting = import_reference(src)
    alpha, breaks = 0.05, 1000
    cases = []
    for name, x in datasets().items():
        for running in (False, True):
            lower, upper = betting.betting_cs(x, alpha=alpha, breaks=breaks, running_intersection=running)
            cases.append(
                {
                    "name": name,
                    "running_intersection": running,
                    "x": x.tolist(),
                    "lower": np.asarray(lower).tolist(),
                    "upper": np.asarray(upper).tolist(),
                }
            )
    out = Path(__file__).with_name("reference.json")
    fixture = {
        "source": f"confseq {VERSION}, confseq.betting.betting_cs (defaults otherwise)",
        "confseq_version": VERSION,
        "numpy_version": np.__version__,
        "command": f"python tests/data/confseq/make_reference.py {src}",
        "alpha": alpha,
        "breaks": breaks,
        "cases": cases,
    }
    out.write_text(json.dumps(fixture, indent=1) + "\n")
    print(f"wrote {out}: {len(cases)} cases")


if __name__ == "__main__":
    main()
