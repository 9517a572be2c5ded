"""Checkpointing, one component of the round loop: after every round each rank saves its silos'
models, optimisers, data streams and algorithm state; once every rank has written, rank 0 writes
the round's ``manifest.json`` (each file's size and SHA-256, and the loop's state beside it) and
marks the round complete (``checkpoints/latest.json``). The last two rounds are kept.

A resumed or restarted run continues from the newest round whose files all match their manifest
(:func:`usable_checkpoint`): a file truncated or corrupted by a crash, a full disk or a hand is
named in one warning line and the round before is used. Every file is written to a temporary
name and renamed, so a crash never leaves half a file under a real name."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from fedsim.distributed import gather_objects
from fedsim.errors import FedsimError
from fedsim.transport import saveable_state

KEEP = 2  # rounds kept on disk: the last one and the one before, in case the last is damaged


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` through a temporary file, so a crash never leaves half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def atomic_write(text: str, path: Path) -> None:
    atomic_write_bytes(text.encode(), path)


def atomic_write_bytes(data: bytes, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def latest_checkpoint(run_dir: str | Path) -> int | None:
    """The last round every rank finished writing (as marked), or None. Use
    :func:`usable_checkpoint` to resume: it also checks the files."""
    marker = Path(run_dir) / "checkpoints" / "latest.json"
    if not marker.is_file():
        return None
    try:
        return int(json.loads(marker.read_text())["round"])
    except (ValueError, KeyError, TypeError):
        return None


def checkpoint_extra(run_dir: str | Path, k: int | None = None) -> dict[str, Any]:
    """What the loop stored beside round ``k`` (default: the latest): the network clock's state."""
    base = Path(run_dir) / "checkpoints"
    if k is not None and (base / f"round_{k}" / "manifest.json").is_file():
        manifest = json.loads((base / f"round_{k}" / "manifest.json").read_text())
        return {key: v for key, v in manifest.items() if key != "files"}
    return json.loads((base / "latest.json").read_text())


def _rounds_on_disk(base: Path) -> list[int]:
    found = [int(m.group(1)) for p in base.glob("round_*") if (m := re.fullmatch(r"round_(\d+)", p.name))]
    return sorted(found, reverse=True)


def _damage(round_dir: Path) -> str | None:
    """Why round_dir cannot be resumed from (a missing, truncated or corrupt file), or None."""
    manifest_path = round_dir / "manifest.json"
    if not manifest_path.is_file():
        return f"{manifest_path} is missing (the round was not completed)"
    try:
        files = json.loads(manifest_path.read_text())["files"]
    except (ValueError, KeyError, TypeError):
        return f"{manifest_path} is corrupt"
    for name, meta in sorted(files.items()):
        path = round_dir / name
        if not path.is_file():
            return f"checkpoint {path} is missing"
        size = path.stat().st_size
        if size != meta["bytes"]:
            return f"checkpoint {path} is truncated ({size} of {meta['bytes']} bytes)"
        if hashlib.sha256(path.read_bytes()).hexdigest() != meta["sha256"]:
            return f"checkpoint {path} is corrupt (its SHA-256 does not match the manifest)"
    return None


def usable_checkpoint(run_dir: str | Path) -> tuple[int | None, list[str]]:
    """(the newest round that can be resumed from, or None; one warning line per damaged round
    passed over). Rounds written before manifests existed are trusted as marked."""
    base = Path(run_dir) / "checkpoints"
    warnings: list[str] = []
    rounds = _rounds_on_disk(base)
    if rounds and not any((base / f"round_{k}" / "manifest.json").is_file() for k in rounds):
        return latest_checkpoint(run_dir), warnings  # an older run's checkpoint: nothing to check
    for n, k in enumerate(rounds):
        damage = _damage(base / f"round_{k}")
        if damage is None:
            return k, warnings
        if n == 0 and "not completed" in damage:
            continue  # a crash during the round's save: the previous round is the last complete one
        after = f"resuming from round {rounds[n + 1]}" if n + 1 < len(rounds) else "no earlier round is kept"
        warnings.append(f"{damage}; {after}")
    return None, warnings


class Checkpointer:
    """Saves and restores this rank's silos (``checkpoints/round_<k>/silo_<i>.pt``)."""

    def __init__(self, run_dir: Path, fed, algo) -> None:
        self.dir = Path(run_dir) / "checkpoints"
        self.fed = fed
        self.algo = algo

    def save(self, k: int, extra: dict[str, Any]) -> None:
        """Every hosted silo's state after round ``k`` (present or not), then, once all ranks
        have written (a gather: a collective), the manifest and the marker; older rounds go."""
        round_dir = self.dir / f"round_{k}"
        round_dir.mkdir(parents=True, exist_ok=True)
        files = {}
        for i, silo in self.fed.hosted.items():
            buf = io.BytesIO()
            torch.save(
                {
                    "round": k,
                    "model": saveable_state(silo.model, self.fed.device),
                    "optimizer": silo.optimizer.state_dict(),
                    "batches": silo.batches.state_dict(),
                    "algorithm": self.algo.silo_state(i),
                },
                buf,
            )
            data = buf.getvalue()
            atomic_write_bytes(data, round_dir / f"silo_{i}.pt")
            files[f"silo_{i}.pt"] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        gathered = gather_objects(files)
        if gathered is None:  # not rank 0
            return
        every = {name: meta for part in gathered for name, meta in part.items()}
        atomic_write(json.dumps({"round": k, **extra, "files": every}), round_dir / "manifest.json")
        atomic_write(json.dumps({"round": k, **extra}), self.dir / "latest.json")
        for old in _rounds_on_disk(self.dir):
            if old <= k - KEEP:
                shutil.rmtree(self.dir / f"round_{old}", ignore_errors=True)

    def restore(self, k: int) -> dict[str, Any]:
        """Load round ``k`` into this rank's silos; return what :meth:`save` stored beside it."""
        round_dir = self.dir / f"round_{k}"
        for i, silo in self.fed.hosted.items():
            path = round_dir / f"silo_{i}.pt"
            if not path.is_file():
                raise FedsimError(f"{path}: checkpoint missing; was the run started with a different topology?")
            state = torch.load(path, map_location=self.fed.device, weights_only=False)
            silo.model.load_state_dict(state["model"])
            silo.optimizer.load_state_dict(state["optimizer"])
            silo.batches.load_state_dict(state["batches"])
            self.algo.load_silo_state(i, state["algorithm"])
        return checkpoint_extra(self.dir.parent, k)
