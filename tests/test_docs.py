"""The documentation: its generated reference is current, it explains every field and metric, its links
resolve inside the repository, the README answers a newcomer's first questions in one click, and the
site builds in strict mode (a broken link or anchor fails)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.helpers import free_port
from worm_tune import metrics
from worm_tune.cli import reference
from worm_tune.config import TrialConfig
from worm_tune.config.fields import MEANING, Role
from worm_tune.config.tree import specs
from worm_tune.ticket.schedules import OnTrigger
from worm_tune.tune import spaces

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
#: A Markdown link's target: ``[text](target)``, the target up to a space or ")".
LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_generated_reference_is_current() -> None:
    """Regenerating the pages gives the committed files: a field, metric or flag added or changed
    without rerunning the generator (or a generated page edited by hand) fails here."""
    assert reference.stale(ROOT) == [], f"run {reference.COMMAND}"


def test_check_flag_says_which_pages_are_stale(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert reference.main(["--root", str(tmp_path)]) == 0
    assert reference.main(["--root", str(tmp_path), "--check"]) == 0
    page = tmp_path / reference.REFERENCE / "metrics.md"
    page.write_text(page.read_text(encoding="utf-8").replace("| `d_max` |", "| `d_maximum` |"), encoding="utf-8")
    assert reference.main(["--root", str(tmp_path), "--check"]) == 1
    assert "metrics.md is stale" in capsys.readouterr().err


def test_every_config_field_is_in_the_reference_with_its_help_and_what_it_allows() -> None:
    page = reference.config_page()
    rows = {line.split("|")[1].strip(" `"): line for line in page.splitlines() if line.startswith("| `")}
    for key, spec in specs(TrialConfig).items():
        assert spec.help.strip(), f"{key} has no help"
        assert key in rows, f"{key} is missing from the configuration reference"
        assert reference._cell(spec.help) in rows[key]
        if spec.allowed:
            assert reference._cell(spec.allowed) in rows[key]
    for role in Role:
        assert reference._cell(MEANING[role]) in page


def test_every_metric_is_in_the_reference_with_its_help_unit_and_mlflow_key() -> None:
    page = reference.metrics_page()
    rows = {line.split("|")[1].strip(" `"): line for line in page.splitlines() if line.startswith("| `")}
    for spec in metrics.SPECS:
        assert spec.help.strip() and spec.unit.strip(), f"{spec.name} needs a help text and a unit"
        row = rows[spec.name]
        assert reference._cell(spec.help) in row and f"| {spec.unit} |" in row
        if spec.cadence != "epoch":
            assert f"`{metrics.logged_name(spec.name)}`" in row


def test_an_empty_help_text_is_refused() -> None:
    with pytest.raises(ValueError, match=r"search\.ratio has no help text"):
        reference._described("search.ratio", "  ")


def test_every_flag_of_every_command_is_in_the_reference() -> None:
    page = reference.cli_page()
    for parser in reference._commands():
        assert f"## `{parser.prog}`" in page
        for action in parser._actions:
            for option in action.option_strings:
                assert f"`{option}" in page, f"{parser.prog} {option} is missing from the commands reference"


def test_the_search_space_format_names_every_key_a_space_may_hold() -> None:
    page = (DOCS / "reference" / "search-spaces.md").read_text(encoding="utf-8")
    tables = {
        "Top level": spaces._TOP_KEYS,
        "`[[cases]]`": spaces._CASE_KEYS,
        "`[optuna]`": spaces._OPTUNA_KEYS,
        "`[final]`": spaces._FINAL_KEYS,
        "`[analysis]`": spaces._ANALYSIS_KEYS,
    }
    sections = dict(re.findall(r"^## (.+?)\n(.*?)(?=^## |\Z)", page, flags=re.M | re.S))
    for title, keys in tables.items():
        documented = set(re.findall(r"^\| `(\w+)` \|", sections[title], flags=re.M))
        assert documented == keys, f"{title}: documented {sorted(documented)}, allowed {sorted(keys)}"


def _markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def test_nothing_points_outside_the_repository() -> None:
    """Every relative link of README and docs/ names a file in the repository; none leaves it."""
    for path in _markdown_files():
        text = path.read_text(encoding="utf-8")
        assert "ALGORITHM.md" not in text and "../shared" not in text, path
        for target in LINK.findall(text):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            resolved = (path.parent / target.split("#")[0]).resolve()
            assert resolved.is_relative_to(ROOT), f"{path.name} links outside the repository: {target}"
            assert resolved.exists(), f"{path.relative_to(ROOT)} links to a missing file: {target}"
    for source in [*ROOT.glob("worm_tune/**/*.py"), *ROOT.glob("analysis/*.py")]:
        assert "ALGORITHM.md" not in source.read_text(encoding="utf-8"), source


def test_readme_is_short_and_answers_the_first_questions_in_one_click() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 160
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    # Install and test: the README's commands are the ones CI runs.
    install = re.search(r"pip install (?:--quiet )?(-c constraints\.txt -e \S+)", ci).group(1)
    assert f"pip install {install}" in text and "python -m pytest -q" in text
    links = set(LINK.findall(text))
    for page in ("docs/guides/gpu-cifar10.md", "docs/guides/final.md", "docs/reference/config.md", "docs/method.md"):
        assert page in links, f"README does not link {page}"


def test_every_page_is_in_the_site_navigation() -> None:
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for path in DOCS.rglob("*.md"):
        assert f": {path.relative_to(DOCS).as_posix()}" in nav, f"{path.relative_to(ROOT)} is not in mkdocs.yml's nav"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site as `.ci/run` builds it: any warning (a link to a missing page or anchor, a page left out
    of the nav, a docstring mkdocstrings cannot render) fails the build."""
    if shutil.which("mkdocs", path=str(Path(sys.executable).parent)) is None:
        pytest.fail("mkdocs is not installed: pip install -c constraints.txt -e '.[docs]'")
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"NO_MKDOCS_2_WARNING": "1", "PATH": str(Path(sys.executable).parent)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_the_site_builds_in_strict_mode(site: Path) -> None:
    for page in ("index.html", "method/index.html", "reference/config/index.html", "guides/gpu-cifar10/index.html"):
        assert (site / page).is_file(), page
    api = (site / "reference" / "python-api" / "index.html").read_text(encoding="utf-8")
    assert "TrialEngine" in api and ":class:" not in api and ":func:" not in api


def test_the_site_as_a_reader_sees_it(site: Path, tmp_path: Path) -> None:
    """In Chromium: the home page links the four sections, the configuration reference shows a field's
    row, and the search box finds a page by a word of its text."""
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="Playwright is not installed (pip install -e '.[dev]')"
    )
    chromium = os.environ.get("WORM_TUNE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium; or set WORM_TUNE_CHROMIUM)")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(site)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium)
            page = browser.new_page(viewport={"width": 1300, "height": 1000})
            url = f"http://127.0.0.1:{port}"
            for _ in range(50):
                with contextlib.suppress(sync_api.Error):
                    page.goto(url, timeout=5_000)
                    break
                time.sleep(0.2)
            nav = page.locator("nav.md-nav--primary")
            for section in ("Guides", "Concepts", "Reference", "Results"):
                sync_api.expect(nav.get_by_text(section, exact=True).first).to_be_visible()
            page.get_by_role("link", name="Configuration", exact=True).first.click()
            row = page.locator("tr", has=page.locator("code", has_text="search.ratio")).first
            sync_api.expect(row).to_contain_text("pruning ratio p")
            page.screenshot(path=tmp_path / "config.png")
            # The search index loads in a worker after the page; a query typed before it is ready finds
            # nothing, so type it again until the results come (or a minute passes).
            search, results = page.locator("input.md-search__input"), page.locator(".md-search-result__item")
            for _ in range(30):
                search.fill("")
                search.type("truncation window")
                with contextlib.suppress(AssertionError):
                    sync_api.expect(results.first).to_be_visible(timeout=2_000)
                    break
            sync_api.expect(results.first).to_be_visible()
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_the_search_space_guide_s_example_is_a_valid_space_of_the_size_it_says(tmp_path: Path) -> None:
    guide = (DOCS / "guides" / "search-spaces.md").read_text(encoding="utf-8")
    first, quick = re.findall(r"```toml\n(.*?)```", guide, flags=re.S)[:2]
    path = tmp_path / "my_vgg.toml"
    path.write_text(first + "\n" + quick, encoding="utf-8")
    assert "= 60 trials" in guide
    assert len(spaces.load_space(str(path)).grid()) == 60
    assert len(spaces.load_space(str(path), "quick").grid()) == 4 * 3


def test_the_extending_guide_s_schedule_does_what_it_says() -> None:
    """The guide's example schedule (``Ramp``), run as written: r = 0.5, 0.25, 0.125, 0.1 after the trigger."""
    guide = (DOCS / "guides" / "extending.md").read_text(encoding="utf-8")
    source = textwrap.dedent(re.search(r"```python\n(\s*class Ramp.*?)```", guide, flags=re.S).group(1))
    namespace: dict[str, object] = {"OnTrigger": OnTrigger}
    exec(source, namespace)
    schedule = namespace["Ramp"](TrialConfig().replace({"method": "worm", "worm.factor": 0.1}))  # type: ignore[operator]
    level = schedule.cfg.search.threshold + schedule.cfg.worm.delta
    factors = [
        schedule.observe(epoch, d)
        for epoch, d in [(5, level + 0.01), (6, level - 0.01), (7, 0.1), (8, 0.1), (9, 0.1), (10, 0.1)]
    ]
    assert schedule.trigger_epoch == 6
    assert factors == [1.0, 0.5, 0.25, 0.125, 0.1, 0.1]
    assert "r = 0.5, 0.25, 0.125, 0.1, 0.1" in guide
