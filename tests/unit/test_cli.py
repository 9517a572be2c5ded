"""The command line as a user meets it, in process: one-line errors with exit 2, the topology
commands, and a help that names every command."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fedsim.cli import main
from tests.harness import CLI_TINY, sets


def bad_file(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("case", ["yaml", "unknown_key", "algorithm", "scenario", "isolated", "silo_count",
                                  "missing_topology", "missing_config", "folder", "nproc", "heterogeneous",
                                  "baseline", "range", "grid", "retired", "empty_config", "list_config",
                                  "output_is_file", "output_under_file", "output_not_writable", "nproc_zero",
                                  "nproc_negative", "topology_edge_typo", "topology_silo_typo",
                                  "topology_top_typo", "missing_image"])
def test_bad_input_is_one_line_and_exit_2(tmp_path, case, capsys):
    args = {
        "yaml": ["run", bad_file(tmp_path, "c.yaml", "rounds: [3\n")],
        "unknown_key": ["run", bad_file(tmp_path, "c.yaml", "roundz: 3\n")],
        "algorithm": ["run", "--set", "algorithm=sgd"],
        "scenario": ["run", "--set", "algorithm=gossip", "--set", "scenario=cfl"],
        "isolated": ["run", "--set", "topology=" + bad_file(tmp_path, "t.yaml", "silos: 3\nedges: [[0, 1], [1, 0]]\n")],
        "silo_count": ["run", "--set", "accumulation_status=[1, 1]"],
        "missing_topology": ["run", "--set", "topology=nowhere.yaml"],
        "missing_config": ["run", str(tmp_path / "nope.yaml")],
        "folder": ["run", "--set", "data.kind=folder", "--set", f"data.root={tmp_path / 'nodata'}"],
        "nproc": ["run", "--nproc", "9", *sets(CLI_TINY)],
        "heterogeneous": ["run", "--set", "algorithm=fedavg", "--set", "model.per_silo=[cnn,resnet10]"],
        "baseline": ["run", "--set", "algorithm=mdhfl", "--set", "model.per_silo=[cnn,resnet10]",
                     "--set", "compare_with=[moon]"],
        "range": ["run", "--set", "fedefm.beta=2"],
        "grid": ["run", "--set", "emd.grid=5", "--set", "data.image_size=32"],  # the 4×4 map at 32 px
        "retired": ["run", "--set", "fedefm.sync_every=1"],
        "empty_config": ["run", bad_file(tmp_path, "c.yaml", "# nothing here\n")],
        "list_config": ["run", bad_file(tmp_path, "c.yaml", "- algorithm: fedavg\n")],
        "output_is_file": ["run", *sets(CLI_TINY), "--set", f"output_dir={bad_file(tmp_path, 'f', 'x')}"],
        "output_under_file": ["run", *sets(CLI_TINY), "--set", f"output_dir={bad_file(tmp_path, 'f', 'x')}/runs"],
        "output_not_writable": ["run", *sets(CLI_TINY), "--set", "output_dir=/proc/fedsim-runs"],
        "nproc_zero": ["run", "--nproc", "0", *sets(CLI_TINY)],
        "nproc_negative": ["run", "--nproc", "-1", *sets(CLI_TINY)],
        "topology_edge_typo": ["run", *sets(CLI_TINY), "--set", "topology=" + bad_file(
            tmp_path, "t.yaml", "silos: 2\nedges: [{src: 0, dst: 1, latncy_ms: 3}]\n")],
        "topology_silo_typo": ["run", *sets(CLI_TINY), "--set", "topology=" + bad_file(
            tmp_path, "t.yaml", "silos: [{name: a, compute_ms: 1}, {name: b, compte_ms: 1}]\nedges: [[0, 1]]\n")],
        "topology_top_typo": ["run", *sets(CLI_TINY), "--set", "topology=" + bad_file(
            tmp_path, "t.yaml", "silos: 2\ndirectd: false\nedges: [[0, 1]]\n")],
        "missing_image": ["run", *sets(CLI_TINY), "--set", "data.kind=folder", "--set",
                          f"data.root={_folder_with_a_missing_image(tmp_path)}"],
    }[case]
    if not any(str(a).startswith("output_dir=") or "--set=output_dir=" in str(a) for a in args):
        args = args + ["--set", f"output_dir={tmp_path / 'runs'}"]
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("fedsim: error: ") and "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # nothing was started or written
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    if case.startswith("topology_"):  # the misspelt key is named, with the right one
        assert "unknown key" in err and "did you mean" in err
    if case == "missing_image":
        assert "labels.csv, row 3" in err and "b.png does not exist" in err


def _folder_with_a_missing_image(tmp_path: Path) -> Path:
    """Folder data of 4 silos (ring-4) whose first silo's labels.csv names an image that is not there."""
    import numpy as np
    from PIL import Image

    root = tmp_path / "folder"
    for silo in "abcd":
        (root / silo / "images").mkdir(parents=True)
        for name in ("a.png", "b.png", "c.png"):
            Image.fromarray(np.full((16, 16), 90, dtype=np.uint8)).save(root / silo / "images" / name)
        (root / silo / "labels.csv").write_text("file,label\na.png,0\nb.png,1\nc.png,0\n")
    (root / "a" / "images" / "b.png").unlink()
    return root


def test_topology_commands(tmp_path):
    out = tmp_path / "rr.yaml"
    assert main(["topology", "make", "random-regular", "8", "--degree", "3", "-o", str(out)]) == 0
    assert main(["topology", "validate", str(out), "--strongly-connected"]) == 0
    assert main(["topology", "show", str(out), "--png", str(tmp_path / "rr.png")]) == 0
    assert (tmp_path / "rr.png").stat().st_size > 1000
    bad = bad_file(tmp_path, "bad.yaml", "silos: 3\nedges: [[0, 1], [1, 1]]\n")
    assert main(["topology", "validate", bad]) == 2


def test_help_names_every_command():
    from fedsim.cli import build_parser

    text = build_parser().format_help()
    for command in ("run", "sweep", "topology", "data", "downstream", "plot", "config", "list"):
        assert re.search(rf"^\s+{command}\b", text, re.M), command
