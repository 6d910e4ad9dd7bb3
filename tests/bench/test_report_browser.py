"""The HTML report in a real browser (headless Chromium): its script runs without errors, every figure
decodes, clicking a column header sorts the table; and the page's structure (ranking before glossary,
one colour per optimizer from the palette)."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from conftest import make_tiny_task

from tunefree.bench import run_sweep, summarise, write_report
from tunefree.bench.report import figures as RF
from tunefree.bench.report.palette import style

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _quiet(_: str) -> None:
    return None


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("browser")
    run_sweep(make_tiny_task(), optimizers=["sgd", "adam"], seeds=1, out=out, workers=1, progress=False,
              report=False, log=_quiet)
    return write_report(out)


def _dump_dom(url: str) -> str:
    assert CHROMIUM
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                               "--disable-background-networking", "--disable-component-update", "--disable-sync",
                               f"--user-data-dir={profile}", "--virtual-time-budget=3000", "--dump-dom", url],
                              capture_output=True, text=True, timeout=120)
    return done.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (Debian: apt-get install chromium)")
def test_report_renders_sorts_and_loads_figures_in_chromium(report: Path) -> None:
    page = report.read_text()
    # the ranking table is the first sortable table; sort it by optimizer name (column 1)
    dom = _dump_dom(report.as_uri() + "#selftest-0-1")
    status = re.search(r"<div id=\"report-script\"[^>]*>", dom)
    assert status, dom[-2000:]
    tag = status.group(0)
    assert 'data-ok="1"' in tag and "data-error" not in tag, tag
    assert 'data-selftest="sorted 0 1"' in tag
    decoded, total = map(int, re.search(r'data-images="(\d+)/(\d+)"', tag).groups())
    assert total == page.count("data:image/png;base64,") and decoded == total > 0

    def names(html: str) -> list[str]:
        body = html.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
        return [re.findall(r"<td[^>]*>(.*?)</td>", row)[1] for row in body.split("</tr>") if "<td" in row]

    before, after = names(page), names(dom)
    assert sorted(before) == after  # ascending by name after one click


def test_ranking_comes_first_and_glossary_last(report: Path) -> None:
    md = (report.parent / "report.md").read_text()
    html = report.read_text()
    for text in (md, html):
        assert 0 < text.index("Ranking") < text.index("Aggregate over tasks") < text.index("Glossary")
    assert "Only baselines ran: " in md  # the verdict is written from what ran (sgd and adam here)
    assert md.index("## Glossary") < md.index("## Appendix")


def test_every_line_takes_its_colour_from_the_palette(report: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    (ts,) = summarise(report.parent)
    labels = {o.label for o in ts.optimizers}
    seen: dict[str, set[str]] = {}
    for fig in (RF.figure_lr_sensitivity(ts), RF.figure_learning_curves(ts), RF.figure_profile([ts])):
        for ax in fig.axes:
            for line in ax.get_lines():
                if line.get_gid() in labels:
                    seen.setdefault(line.get_gid(), set()).add(matplotlib.colors.to_hex(line.get_color()))
    assert set(seen) == labels
    for label, colours in seen.items():
        assert colours == {style(label).color}  # one colour per optimizer in every figure
    assert style("momo") == style("momo") and style("momo+cosine").color == style("momo").color
    assert style("my_opt") == style("my_opt") and style("my_opt").color not in {style(n).color for n in labels}
    source = Path(RF.__file__).read_text()
    assert not re.search(r"color=f?\"C\d|color=f\"C\{", source)  # no colour from matplotlib's cycle
