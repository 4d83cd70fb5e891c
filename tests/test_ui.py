"""The MLflow UI as a user sees it, in a real browser: Debian's Chromium driven by Playwright.

A tiny sweep (one seed: EarlyBird and WORM at two deltas) runs through Ray and a SQLite store; the
store is then copied to another folder and the original artifacts deleted, as when results are
rsynced off a cluster, and ``mlflow ui`` is opened in the copy. The tests look at the three pages
a user opens first: the runs table, a trial's charts and the sweep's report. Each page is saved
as a screenshot; ``WORM_TUNE_SCREENSHOTS=docs`` also writes them there (README and docs/guides/mlflow.md show them), and
``WORM_TUNE_UI_STORE=<folder>`` runs the tests on a finished sweep named "quick" in that folder
instead of the tiny one (how the screenshots in ``docs/`` were taken, from the quick profile).

Skipped, saying why, where Playwright or Chromium is missing (``.ci/run`` installs both).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from mlflow.tracking import MlflowClient

from tests.helpers import SWEEP_TINY, free_port, healthy, results_of
from worm_tune.cli import sweep
from worm_tune.metrics import SUMMARY_SECTION
from worm_tune.tune.store import PARENT_TAG, TAG_SWEEP

pytestmark = pytest.mark.slow
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install -e '.[dev]')")

#: Debian's browser (Playwright's own download does not work here); WORM_TUNE_CHROMIUM names another.
CHROMIUM = os.environ.get("WORM_TUNE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
#: The run names the tiny sweep's trials get: the fields that vary between them (method, delta), and the seed.
RUN_NAMES = ("earlybird s0", "worm δ=0.01 s0", "worm δ=0.03 s0")
#: How long a page may take to draw on a busy 2-core machine.
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def moved_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A finished tiny sweep's store, copied elsewhere (the original's artifacts deleted), served by
    ``mlflow ui`` started in the copy with no store flags."""
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium; or set WORM_TUNE_CHROMIUM)")
    given = os.environ.get("WORM_TUNE_UI_STORE")
    root, name = (Path(given), "quick") if given else (tmp_path_factory.mktemp("ui"), "ui")
    if not given:
        uri = f"sqlite:///{root / 'mlflow.db'}"
        args = ["--storage", str(root / "ray"), "--tracking-uri", uri, "--reports", str(root / "reports")]
        ray.init(address="local", num_cpus=2, include_dashboard=False)
        try:
            assert sweep.main(["resnet18", "--quick", *SWEEP_TINY, "--set", "seed=0", "--name", name, *args]) == 0
        finally:
            ray.shutdown()
    moved = tmp_path_factory.mktemp("moved")
    for part in ("mlflow.db", "mlartifacts"):
        (shutil.copytree if (root / part).is_dir() else shutil.copy2)(root / part, moved / part)
    if not given:
        shutil.rmtree(root / "mlartifacts")  # nothing can be read from the old place

    client = MlflowClient(f"sqlite:///{moved / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], f"tags.`{TAG_SWEEP}` = '{name}'")
    (parent,) = [r for r in runs if PARENT_TAG not in r.data.tags]
    children = {r.info.run_name: r for r in runs if PARENT_TAG in r.data.tags}

    port = free_port()
    command = [sys.executable, "-m", "mlflow", "ui", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    server = subprocess.Popen(
        command, cwd=moved, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while not healthy(url):
            assert server.poll() is None and time.monotonic() < deadline, "mlflow ui did not start"
            time.sleep(1)
        yield {
            "url": url,
            "experiment": parent.info.experiment_id,
            "parent": parent,
            "children": children,
            "tiny": not given,
        }
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)


@pytest.fixture(scope="module")
def browser(moved_store: dict[str, Any]) -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    page = browser.new_page(viewport={"width": 1500, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    yield page
    page.close()


def test_the_runs_table_names_each_trial_by_what_varies(moved_store: dict[str, Any], page: Any, tmp_path: Path) -> None:
    page.goto(f"{moved_store['url']}/#/experiments/{moved_store['experiment']}/runs")
    page.get_by_text("Training runs").first.wait_for()  # the model-training view, not the GenAI overview
    _close_assistant(page)
    # Trials are child runs, folded under the sweep's run: unfold it as a user would.
    page.get_by_role("link", name=moved_store["parent"].info.run_name, exact=True).wait_for()
    page.locator("[col-id='attributes.`Run Name`'] button").first.click()
    children = moved_store["children"]
    if moved_store["tiny"]:
        assert sorted(children) == sorted(RUN_NAMES)
    for name in children:
        page.get_by_role("link", name=name, exact=True).wait_for()
    (dataset,) = {run.inputs.dataset_inputs[0].dataset.name for run in children.values()}
    assert page.get_by_text(dataset).count() == len(children)  # each trial's dataset input, shown by name
    _screenshot(page, tmp_path, "mlflow-runs.png")


def test_a_trial_shows_its_curves_first_in_sections_by_phase(
    moved_store: dict[str, Any], page: Any, tmp_path: Path
) -> None:
    run = next(run for name, run in sorted(moved_store["children"].items()) if name.startswith("worm δ=0.01"))
    page.goto(f"{moved_store['url']}/#/experiments/{moved_store['experiment']}/runs/{run.info.run_id}/model-metrics")
    _close_assistant(page)
    sections = ("retrain", "search", SUMMARY_SECTION)
    for section in sections:
        page.get_by_text(section, exact=True).first.wait_for()
    text = page.locator("body").inner_text()
    order = [text.index(f"\n{section}\n(") for section in sections]
    assert order == sorted(order)  # the per-epoch curves' sections come before the one-off results
    assert "test_acc" in text[order[0] : order[1]]  # the first section's charts are curves
    assert f"\n{SUMMARY_SECTION}\n({len(results_of(run))})" in text  # every one-off result, in the last section
    _screenshot(page, tmp_path, "mlflow-trial-metrics.png")


def test_the_report_with_its_plots_renders_inside_mlflow(
    moved_store: dict[str, Any], page: Any, tmp_path: Path
) -> None:
    run = moved_store["parent"]
    page.goto(
        f"{moved_store['url']}/#/experiments/{moved_store['experiment']}/runs/{run.info.run_id}"
        "/artifacts/report/report.html"
    )
    _close_assistant(page)
    page.get_by_text("report/report.html").first.wait_for()
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while (frame := _report_frame(page)) is None:
        assert time.monotonic() < deadline, "the report did not render"
        page.wait_for_timeout(500)
    frame.wait_for_function("Array.from(document.images).every(i => i.complete)")
    sizes = frame.evaluate("Array.from(document.images).map(i => [i.naturalWidth, i.naturalHeight])")
    assert len(sizes) >= 3 and all(w > 100 and h > 100 for w, h in sizes)  # every plot drawn, none broken
    frame.evaluate("document.images[0].scrollIntoView()")
    _screenshot(page, tmp_path, "mlflow-report.png")


def _report_frame(page: Any) -> Any | None:
    """The frame MLflow's artifact viewer renders the HTML report in, once it holds the report."""
    for frame in page.frames:
        if frame != page.main_frame and frame.evaluate("document.querySelector('h1') !== null"):
            return frame
    return None


def _close_assistant(page: Any) -> None:
    """MLflow 3.x opens its assistant panel beside every page; a user closes it to see the page."""
    with contextlib.suppress(sync_api.TimeoutError):  # a version without it, or it stayed closed
        page.get_by_role("button", name="Close").first.click(timeout=10_000)


def _screenshot(page: Any, tmp_path: Path, name: str) -> None:
    page.wait_for_timeout(1500)  # let charts finish drawing
    page.screenshot(path=tmp_path / name)
    folder = os.environ.get("WORM_TUNE_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copy2(tmp_path / name, Path(folder) / name)
