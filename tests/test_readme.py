"""The README's results and the shipped model cards quote the committed metrics files, nothing else."""

from __future__ import annotations

import json
import re
import shlex

import pytest

from train.tables import BLOCK, get_args_parser, main, render, update

from .conftest import ROOT, numbers_of

README = (ROOT / "README.md").read_text()
BLOCKS = BLOCK.findall(README)


def test_the_readme_has_generated_blocks():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize(("args", "body"), BLOCKS, ids=[a for a, _ in BLOCKS])
def test_readme_tables_equal_the_metrics_files(args, body, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert body == render(shlex.split(args)), f"regenerate with: python -m train.tables {args}"


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
