"""`fedsim data preview` through its argparse registration."""

import argparse

import pytest

from fedsim.commands import data as data_cmd
from fedsim.errors import DataError


def _parse(argv):
    parser = argparse.ArgumentParser(prog="fedsim")
    data_cmd.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_preview_writes_png_and_prints_table(tmp_path, capsys):
    out = tmp_path / "sub" / "grid.png"
    args = _parse(["data", "preview", "--domains", "human", "phantom", "--per-domain", "3", "--size", "32",
                   "--out", str(out), "--silos", "3", "--unseen-fraction", "1.0", "--samples-per-silo", "12"])
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
    with pytest.raises(DataError, match="partition"):
        args.handler(_parse(["data", "preview", "--config", str(cfg), "--out", str(tmp_path / "g.png")]))
