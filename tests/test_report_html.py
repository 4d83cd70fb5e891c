"""``report.html``: the report's Markdown as one self-contained page (MLflow's artifact viewer shows
it in an iframe, where the plots of ``report.md`` do not resolve), and the headline differences the
sweep's parent run carries as metrics."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from analysis import report
from analysis.page import to_html
from tests.test_analysis import sweep_of, trial

NOTE = "a note with <script>x</script> & a < b"
IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)]+)\)")


class Page(HTMLParser):
    """What the tests read of a page: its tags, its images, each table's ``<tr>`` count, its text."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.images: list[dict[str, str | None]] = []
        self.tables: list[int] = []
        self.text: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs))
        elif tag == "table":
            self.tables.append(0)
        elif tag == "tr":
            self.tables[-1] += 1

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def markdown_tables(text: str) -> list[int]:
    """Each pipe table's row count, its header included and the rule under it not."""
    tables, previous = [], False
    for line in text.splitlines():
        row = line.startswith("|")
        if row and not previous:
            tables.append(0)
        if row and not line.startswith("|-"):
            tables[-1] += 1
        previous = row
    return tables


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A report of two settings and two WORM variants (one of which never converged in one setting),
    with a note full of HTML, written and logged to a parent run in a real SQLite MLflow store."""
    root = tmp_path_factory.mktemp("html")
    rows = []
    for ratio in (0.3, 0.5):
        at = {"search.ratio": ratio, "search.window": 3}
        rows += [trial("earlybird", s, search_epochs=8 + s, config=at) for s in range(3)]
        rows += [trial("worm", s, search_epochs=7, final_acc=0.75, config=at | {"worm.delta": 0.05}) for s in range(3)]
        status = "not_converged" if ratio == 0.3 else "converged"
        rows += [trial("worm", s, status, search_epochs=30, config=at | {"worm.delta": 0.1}) for s in range(3)]
    sweep = sweep_of(rows)
    sweep.notes.append(NOTE)
    written = report.write(sweep, root / "report", n_boot=200)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("sweeps", artifact_location=(root / "mlartifacts").as_uri())
    parent = client.create_run(exp).info.run_id
    report.log_to_mlflow(written, uri, parent)
    return {"report": written, "client": client, "parent": parent}


def test_every_plot_is_an_inline_png(logged: dict[str, Any]) -> None:
    written: report.Report = logged["report"]
    images = IMAGE.findall(written.path.read_text())
    page = Page((written.folder / report.HTML).read_text(encoding="utf-8"))
    assert len(images) == len(page.images) == 5
    for (alt, name), img in zip(images, page.images, strict=True):
        src = img["src"] or ""
        assert src.startswith("data:image/png;base64,") and img["alt"] == alt
        assert base64.b64decode(src.removeprefix("data:image/png;base64,")) == (written.folder / name).read_bytes()


def test_every_table_keeps_its_rows_and_no_markdown_is_left(logged: dict[str, Any]) -> None:
    written: report.Report = logged["report"]
    text = (written.folder / report.HTML).read_text(encoding="utf-8")
    page = Page(text)
    assert page.tables == markdown_tables(written.path.read_text()) and len(page.tables) == 7
    assert "|---" not in text and "|-" not in text and "](" not in text and "**" not in text
    assert '<th class="num">pairs</th>' in text and "<td>WORM δ=0.1 r=0.003</td>" in text


def test_text_is_escaped(logged: dict[str, Any]) -> None:
    text = (logged["report"].folder / report.HTML).read_text(encoding="utf-8")
    page = Page(text)
    assert "script" not in page.tags and NOTE in "".join(page.text)
    assert "a note with &lt;script&gt;x&lt;/script&gt; &amp; a &lt; b" in text
    assert "too few pairs (n=3 &lt; 6)" in text


def test_the_page_is_logged_beside_the_markdown(logged: dict[str, Any]) -> None:
    artifacts = {a.path: a.file_size for a in logged["client"].list_artifacts(logged["parent"], "report")}
    page = logged["report"].folder / report.HTML
    assert artifacts["report/report.html"] == page.stat().st_size and "report/report.md" in artifacts


def test_the_parent_run_carries_the_headline_differences(logged: dict[str, Any]) -> None:
    written: report.Report = logged["report"]
    table = pd.read_csv(written.folder / report.COMPARISONS_CSV).set_index(["setting", "variant", "metric"])
    metrics = logged["client"].get_run(logged["parent"]).data.metrics
    expected = {}
    for ratio in (0.3, 0.5):
        setting = f"resnet18 · digits · p={ratio} · s=0.1"
        for delta in (0.05, 0.1):
            variant = f"WORM δ={delta} r=0.003"
            prefix = f"headline/resnet18 digits p_{ratio} s_0.1/WORM delta_{delta} r_0.003"
            for key in ("search_epochs", "final_acc"):
                row = table.loc[(setting, variant, key)]
                expected[f"{prefix}/{key}_pairs"] = row["n_pairs"]
                if row["n_pairs"]:
                    expected[f"{prefix}/{key}_diff"] = row["diff_mean"]
    assert metrics == pytest.approx(expected)
    assert "headline/resnet18 digits p_0.3 s_0.1/WORM delta_0.1 r_0.003/search_epochs_diff" not in metrics
    assert metrics["headline/resnet18 digits p_0.3 s_0.1/WORM delta_0.1 r_0.003/search_epochs_pairs"] == 0
    assert metrics["headline/resnet18 digits p_0.5 s_0.1/WORM delta_0.05 r_0.003/search_epochs_diff"] == -2


def test_long_and_clashing_labels_give_unique_names_mlflow_accepts(logged: dict[str, Any]) -> None:
    long = " · ".join(f"field{i}=value{i}" for i in range(30))
    labels = [(long, "WORM δ=0.05"), (long + " · x=1", "WORM δ=0.05"), ("p=0.5", "a/b"), ("p_0.5", "a/b")]
    rows = [
        {"setting": s, "variant": v, "metric": m, "n_pairs": 6, "diff_mean": 1.0}
        for s, v in labels
        for m in report.HEADLINE
    ]
    names = report.headline_metrics(pd.DataFrame(rows))
    assert len(names) == 4 * 2 * len(report.HEADLINE)
    assert all(len(name) <= 250 and name.isascii() for name in names)
    assert "headline/p_0.5/a_b/final_acc_diff" in names
    client: MlflowClient = logged["client"]
    run = client.create_run(client.get_run(logged["parent"]).info.experiment_id).info.run_id
    client.log_batch(run, metrics=[Metric(k, v, 0, 0) for k, v in names.items()])  # MLflow checks each name
    assert client.get_run(run).data.metrics == names


def test_the_converter_handles_what_the_report_writes(tmp_path: Path) -> None:
    png = b"\x89PNG"
    (tmp_path / "a.png").write_bytes(png)
    text = "\n".join(
        [
            "# Sweep `a<b`",
            "",
            "> **Bold** & `x|y`",
            "",
            "| name | value |",
            "|------|-------|",
            "| a \\| b | 1.5 |",
            "| <i> | - |",
            "",
            "- [`t.csv`](t.csv): rows",
            "",
            "![one](a.png) ![gone](missing.png)",
        ]
    )
    page = to_html(text, tmp_path)
    assert "<title>Sweep a&lt;b</title>" in page and "<h1>Sweep <code>a&lt;b</code></h1>" in page
    assert "<blockquote><p><strong>Bold</strong> &amp; <code>x|y</code></p></blockquote>" in page
    assert '<tr><td>a | b</td><td class="num">1.5</td></tr>' in page
    assert '<tr><td>&lt;i&gt;</td><td class="num">-</td></tr>' in page
    assert '<li><a href="t.csv"><code>t.csv</code></a>: rows</li>' in page
    assert f'<img src="data:image/png;base64,{base64.b64encode(png).decode()}" alt="one">' in page
    assert '<img src="missing.png" alt="gone">' in page
