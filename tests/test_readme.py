"""The README and docs/ quote the committed metrics files, nothing else; the README stays a user's page.

Every block between ``<!-- python -m train.tables ARGS -->`` and ``<!-- end tables -->`` in README.md or
docs/*.md is regenerated from its own command line and compared; the model cards' percentages come from
their metrics; the README's install and test commands are exactly those ``.ci/run`` runs.
"""

from __future__ import annotations

import json
import re
import shlex
from urllib.parse import unquote

import pytest
import yaml

from train.tables import BLOCK, get_args_parser, main, render, update

from .conftest import ROOT, numbers_of

README = (ROOT / "README.md").read_text()
BLOCKS = BLOCK.findall(README)
PAGES = {"README.md": README} | {f"docs/{p.name}": p.read_text() for p in sorted((ROOT / "docs").glob("*.md"))}
PAGE_BLOCKS = [(page, args, body) for page, text in PAGES.items() for args, body in BLOCK.findall(text)]
LINK = re.compile(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def test_the_readme_has_generated_blocks():
    assert BLOCKS, "the README's results table is generated: <!-- python -m train.tables ... -->"
    assert len(BLOCK.findall(PAGES["docs/results.md"])) >= 5


@pytest.mark.parametrize(
    ("page", "args", "body"), PAGE_BLOCKS, ids=[f"{page}: {args}" for page, args, _ in PAGE_BLOCKS]
)
def test_generated_tables_equal_the_metrics_files(page, args, body, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert body == render(shlex.split(args)), f"regenerate with: python -m train.tables --update {page}"


def test_every_marker_opens_a_complete_block():
    """A marker line without its end (or an end without its marker) would never be regenerated."""
    for page, text in PAGES.items():
        assert len(re.findall(r"^<!-- python -m train\.tables ", text, flags=re.M)) == len(BLOCK.findall(text)), page
        assert len(re.findall(r"^<!-- end tables -->$", text, flags=re.M)) == len(BLOCK.findall(text)), page


@pytest.mark.parametrize("bundle", sorted(p.parent.name for p in (ROOT / "models").glob("*/README.md")))
def test_model_card_percentages_come_from_its_metrics(bundle):
    folder = ROOT / "models" / bundle
    allowed = {f"{100 * v:.1f}" for v in numbers_of(json.loads((folder / "metrics.json").read_text()))}
    body = (folder / "README.md").read_text().split("---\n", 2)[2]
    percents = re.findall(r"(\d+\.\d)(?:%| ±|–)", body)
    assert len(percents) > 20
    assert not [p for p in percents if p not in allowed]


def test_update_rewrites_stale_blocks_only(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    args, body = BLOCKS[0]
    stale = f"# Notes\n\n<!-- python -m train.tables {args} -->\n| old | table |\n<!-- end tables -->\n\nkept\n"
    page = tmp_path / "page.md"
    page.write_text(stale)
    assert main(get_args_parser().parse_args(["--update", str(page)])) == 0
    assert page.read_text() == update(stale) == stale.replace("| old | table |", body)
    assert main(get_args_parser().parse_args(["--update", str(page)])) == 0
    assert "unchanged" in capsys.readouterr().out


def test_the_paper_column_stands_only_beside_its_own_three_classes(monkeypatch):
    monkeypatch.chdir(ROOT)
    three = render(["results/mnv2-3c-cv"])
    four = render(["results/mnv2-4c-cv"])
    assert "paper (split unstated)" in three.splitlines()[0] and "95.3%" in three
    assert "paper" not in four and "no_tumor" in four
    # A shipped bundle gets the models table with its gate figures, even when it was cross-validated.
    bundle = render(["models/mobilenetv2"])
    assert "gate: non-MRI images refused" in bundle and "mean ± std" not in bundle


def test_a_missing_run_is_a_clear_error(capsys):
    assert main(get_args_parser().parse_args(["results/no-such-run"])) == 2
    assert "no-such-run" in capsys.readouterr().err


def test_readme_is_at_most_200_lines():
    assert len(README.splitlines()) <= 200


def _local_links(text: str) -> list[str]:
    targets = [unquote(t.split("#", 1)[0]) for t in LINK.findall(text)]
    return [t for t in targets if t and not re.match(r"[a-z][a-z0-9+.-]*:", t)]


def test_readme_links_only_to_docs_that_exist():
    links = _local_links(README)
    assert any(link.startswith("docs/") and link.endswith(".md") for link in links)
    assert not [link for link in links if not link.startswith("docs/")], "the README links into docs/ only"
    assert not [link for link in links if not (ROOT / link).is_file()]


@pytest.mark.parametrize("page", [p for p in PAGES if p.startswith("docs/")])
def test_docs_links_resolve(page):
    folder = (ROOT / page).parent
    assert not [link for link in _local_links(PAGES[page]) if not (folder / link).exists()]


def _section(text: str, title: str) -> str:
    """The body of the ``## title`` section of a markdown page, up to the next ``## `` heading."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    assert match, f"no '## {title}' section"
    return match.group(1)


def _ci_commands() -> list[tuple[str, str]]:
    """(README section, command) for every command line of .ci/run under a ``# --- README: "..." ---`` comment."""
    section, commands = None, []
    for line in (ROOT / ".ci" / "run").read_text().splitlines():
        heading = re.match(r'#\s*---\s*README:\s*"([^"]+)"', line.strip())
        if heading:
            section = heading.group(1)
        elif section and line.strip() and not line.lstrip().startswith("#"):
            commands.append((section, line.strip()))
    return commands


def test_ci_runs_exactly_the_readme_commands():
    commands = _ci_commands()
    assert {"Install and run", "Run the tests"} <= {section for section, _ in commands}
    assert any(c == "python -m pytest" for _, c in commands)
    for section, command in commands:
        body = _section(README, section)
        lines = {re.sub(r"\s+#.*$", "", line).strip() for line in body.splitlines()}
        assert command in lines, f"README '## {section}' lacks the .ci/run line: {command}"


def test_the_front_matter_is_the_space_card():
    _, card, _ = README.split("---\n", 2)
    meta = yaml.safe_load(card)
    assert meta["sdk"] == "gradio" and (ROOT / meta["app_file"]).is_file()
    pinned = re.search(r"^gradio==(\S+)$", (ROOT / "requirements.txt").read_text(), flags=re.M)
    assert pinned and meta["sdk_version"] == pinned.group(1)
    assert meta["license"] == "apache-2.0"


@pytest.mark.parametrize("name", ["benchmark.md", "benchmark-mobilenetv2.md"])
def test_the_speed_tables_are_the_benchmark_files(name):
    table = (ROOT / "results" / name).read_text().strip()
    assert table in PAGES["docs/benchmarks.md"], f"copy results/{name} into docs/benchmarks.md"


def test_conformal_tables_from_the_command_line(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    assert main(get_args_parser().parse_args(["--conformal", "ResNet-50=models/default"])) == 0
    out = capsys.readouterr().out
    assert out.startswith("| model | level | thresholds | coverage | glioma | meningioma |")
    assert "| 1 - p (used) |" in out and "thresholds cross-fitted" in out
    stored = json.loads((ROOT / "models" / "default" / "metrics.json").read_text())
    meningioma = stored["conformal"][1]["mondrian"]["per_class_coverage"]["meningioma"]
    assert f"| ResNet-50 | 95% | per class | {stored['conformal'][1]['mondrian']['coverage'] * 100:.1f}% |" in out
    assert f"{meningioma * 100:.1f}%" in out
