"""Checkpointing, one component of the round loop: after every round each rank saves its silos'
models, optimisers, data streams and algorithm state; rank 0 marks the round complete once every
rank has written (``checkpoints/latest.json``); ``--resume`` continues from there."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from fedsim.distributed import barrier
from fedsim.errors import FedsimError
from fedsim.transport import saveable_state


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` through a temporary file, so a crash never leaves half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def atomic_write(text: str, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def latest_checkpoint(run_dir: str | Path) -> int | None:
    """The last round every rank finished writing, or None."""
    marker = Path(run_dir) / "checkpoints" / "latest.json"
    if not marker.is_file():
        return None
    return int(json.loads(marker.read_text())["round"])


def checkpoint_extra(run_dir: str | Path) -> dict[str, Any]:
    """What the loop stored beside the latest round (the network clock's state)."""
    return json.loads((Path(run_dir) / "checkpoints" / "latest.json").read_text())


class Checkpointer:
    """Saves and restores this rank's silos (``checkpoints/round_<k>/silo_<i>.pt``)."""

    def __init__(self, run_dir: Path, fed, algo) -> None:
        self.dir = Path(run_dir) / "checkpoints"
        self.fed = fed
        self.algo = algo

    def save(self, k: int, extra: dict[str, Any]) -> None:
        round_dir = self.dir / f"round_{k}"
        round_dir.mkdir(parents=True, exist_ok=True)
        for i, silo in self.fed.silos.items():
            atomic_save(
                {
                    "round": k,
                    "model": saveable_state(silo.model, self.fed.device),
                    "optimizer": silo.optimizer.state_dict(),
                    "batches": silo.batches.state_dict(),
                    "algorithm": self.algo.silo_state(i),
                    "federation": self.fed.silo_state(i),  # privacy accountant, codec references
                },
                round_dir / f"silo_{i}.pt",
            )
        barrier()
        if self.fed.rank == 0:
            atomic_write(json.dumps({"round": k, **extra}), self.dir / "latest.json")
            previous = self.dir / f"round_{k - 1}"
            if previous.is_dir():
                for f in previous.iterdir():
                    f.unlink()
                previous.rmdir()

    def restore(self, k: int) -> dict[str, Any]:
        """Load round ``k`` into this rank's silos; return what :meth:`save` stored beside it."""
        round_dir = self.dir / f"round_{k}"
        for i, silo in self.fed.silos.items():
            path = round_dir / f"silo_{i}.pt"
            if not path.is_file():
                raise FedsimError(f"{path}: checkpoint missing; was the run started with a different topology?")
            state = torch.load(path, map_location=self.fed.device, weights_only=False)
            silo.model.load_state_dict(state["model"])
            silo.optimizer.load_state_dict(state["optimizer"])
            silo.batches.load_state_dict(state["batches"])
            self.algo.load_silo_state(i, state["algorithm"])
            self.fed.load_silo_state(i, state.get("federation", {}))
        return checkpoint_extra(self.dir.parent)
