"""Run plots read the per-silo metrics correctly.

The checks that need no process: tests/unit/test_plots.py."""

from __future__ import annotations

from fedsim.cli import main
from tests.integration.harness import run_distributed

EFM = ["algorithm=fedefm", "topology=ring-4", "fedefm.overseas_steps=1", "fedefm.distill_steps=1", "emd.grid=2",
       "rounds=3"]


def test_weights_plot_of_a_fedefm_run_draws_every_silos_teachers_by_round(tmp_path, capsys):
    from fedsim.callbacks.jsonl import read_records
    from fedsim.plots import read_teacher_weights


    run_distributed(tmp_path, EFM + ["name=efm"], nproc=1)
    series = read_teacher_weights(tmp_path / "efm")
    expected: dict = {}
    for k, recs in read_records(tmp_path / "efm").items():
        for rec in recs:
            for key in ("teacher_weights", "teacher_similarity"):
                for j, v in rec.get(key, {}).items():
                    expected.setdefault(rec["silo"], {}).setdefault(key, {}).setdefault(int(j), []).append((k, v))
    assert series == expected
    assert [r for r, _ in series[0]["teacher_weights"][1]] == [1, 2]  # round 0 trains locally
    out = tmp_path / "w.png"
    assert main(["plot", str(tmp_path / "efm"), "--weights", "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
    assert main(["plot", str(tmp_path / "efm"), str(tmp_path / "efm"), "--weights"]) == 2
    assert "one run" in capsys.readouterr().err


def test_weights_plot_of_a_run_without_teacher_weights_is_exit_2(tmp_path, capsys):

    run_distributed(tmp_path, ["algorithm=fedavg", "name=avg", "rounds=1"], nproc=1)
    out = tmp_path / "w.png"
    assert main(["plot", str(tmp_path / "avg"), "--weights", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "has no teacher weights" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
