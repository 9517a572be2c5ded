"""`fedsim data preview` through its argparse registration."""

import argparse

import pytest

from fedsim.commands import data as data_cmd
from fedsim.errors import DataError, FedsimError


def _parse(argv):
    parser = argparse.ArgumentParser(prog="fedsim")
    data_cmd.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_preview_writes_png_and_prints_table(tmp_path, capsys):
    out = tmp_path / "sub" / "grid.png"
    args = _parse(["data", "preview", "--domains", "human", "phantom", "--per-domain", "3", "--size", "32",
                   "--out", str(out), "--silos", "4", "--unseen-fraction", "1.0", "--samples-per-silo", "12"])
    assert args.handler(args) == 0
    assert out.is_file() and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = capsys.readouterr().out
    assert "samples per silo" in text and "phantom" in text


def test_preview_bad_domain_names_it():
    args = _parse(["data", "preview", "--domains", "mars", "--out", "x.png"])
    with pytest.raises(DataError, match="mars"):
        args.handler(args)


def test_preview_config_section(tmp_path):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text("data:\n  partition: iid\n  samples_per_silo: 8\n  test_samples: 8\n")
    args = _parse(["data", "preview", "--config", str(cfg), "--no-masks", "--per-domain", "1", "--size", "32",
                   "--out", str(tmp_path / "g.png")])
    assert args.handler(args) == 0
    cfg.write_text("data:\n  partition: nope\n")
    with pytest.raises(FedsimError, match="partition"):
        args.handler(_parse(["data", "preview", "--config", str(cfg), "--out", str(tmp_path / "g.png")]))


def test_preview_without_config_shows_the_default_runs_partition(tmp_path, capsys):
    """Without --config the table is the partition `fedsim run` (the embedded default) trains on:
    each silo's size and class counts equal those of the data a rank of that run loads."""
    from fedsim.config import DEFAULT_CONFIG, load_config
    from fedsim.data.rank import load_rank_data
    from fedsim.plan import build_plan

    args = _parse(["data", "preview", "--no-masks", "--per-domain", "1", "--size", "32",
                   "--out", str(tmp_path / "g.png")])
    assert args.handler(args) == 0
    rows = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()
            if line.split() and line.split()[0].isdigit()}
    plan = build_plan(load_config(DEFAULT_CONFIG), tmp_path / "run", 1)
    data = load_rank_data(plan, 0)
    assert len(rows) == len(data.train) == 4
    for i, silo in enumerate(data.train):
        cells = rows[str(i)]
        counts = [int(c) if c.isdigit() else 0 for c in cells[5:5 + data.num_classes]]  # after n and 4 domains
        assert int(cells[0]) == len(silo)
        assert counts == silo.class_counts(data.num_classes)
