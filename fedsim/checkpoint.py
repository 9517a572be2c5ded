"""Checkpointing, one component of the round loop: after every round (every ``checkpoint.every``
rounds, and always after the last) each rank saves its silos'
models, optimisers, data streams and algorithm state in one file (``rank_<r>.pt``, however many
silos it hosts: a thousand silos are two files a round, not a thousand); once every rank has
written, rank 0 writes the round's ``manifest.json`` (each file's size, SHA-256 and silos, and the
loop's state beside it) and marks the round complete (``checkpoints/latest.json``). The last two
checkpointed rounds are kept. A restore reads only the files holding the silos a rank hosts now, so a run
restarted on fewer ranks (``faults.on_crash: exclude``) finds its silos wherever they were.

A resumed or restarted run continues from the newest round whose files all match their manifest
(:func:`usable_checkpoint`): a file truncated or corrupted by a crash, a full disk or a hand is
named in one warning line and the round before is used. Every file is written to a temporary
name and renamed, so a crash never leaves half a file under a real name.

Every file fedsim reads back with ``torch.load`` — checkpoints, ``foundation.pt``, ``init_from``,
the initial-state cache — goes through :func:`load_data_file`: data only (``weights_only``), so a
file received from someone else cannot run code, whatever its manifest says. What fedsim writes is
tensors, numbers, strings and plain containers, all inside torch's own ``weights_only`` allow-list;
nothing else is allow-listed. Before any rank starts, :func:`check_round` reads the round a resume
continues from, so a file holding anything else stops the run in one line with nothing written."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from fedsim.config.checkpoint import CheckpointConfig
from fedsim.distributed import gather_objects
from fedsim.errors import FedsimError, UnreadableFileError, UnsafeFileError
from fedsim.transport import saveable_state

KEEP = 2  # checkpointed rounds kept on disk: the last one and the one before, in case the last is damaged


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


def load_data_file(path: str | Path, map_location: str | torch.device = "cpu", mmap: bool = False) -> Any:
    """What ``path`` holds, read as data only (``torch.load(weights_only=True)``: tensors, numbers,
    strings, plain containers). A file holding anything else is refused before any of it runs, in
    one line naming the file and what it holds (:class:`UnsafeFileError`); one torch cannot read
    is one line too (:class:`UnreadableFileError`)."""
    try:
        with warnings.catch_warnings():
            # a pickle protocol other than torch's makes torch warn before it refuses: the one line below says it
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        # torch rewraps the weights-only unpickler's error; that one (the context) is the short one
        reason = str(exc.__context__ or exc)
        if found := re.search(r"GLOBAL ([\w.]+)", f"{reason} {exc}"):
            raise UnsafeFileError(
                f"{path}: refused to load: it holds {found.group(1)}, which is not data (fedsim reads checkpoints "
                "and model files as tensors and plain containers only, and runs nothing from them); use a file "
                "written by fedsim") from None
        # an instruction the data-only loader never accepts (INST, STACK_GLOBAL, …), or not a pickle at all
        raise UnreadableFileError(f"{path}: refused to load: not data fedsim can read (the data-only loader says: "
                                  f"{_first_line(reason)}); nothing in it was run; use a file written by fedsim") from None
    except torch.OutOfMemoryError:
        raise  # the device, not the file
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign file: one line, not a traceback
        raise UnreadableFileError(f"{path}: not a readable torch file ({_first_line(str(exc)) or type(exc).__name__})") \
            from None


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0][:160] if lines else ""


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
        if _sha256(path) != meta["sha256"]:
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


def check_round(run_dir: str | Path, k: int) -> None:
    """Read every file of checkpoint round ``k`` as a restore would (memory-mapped, then dropped):
    a file that holds anything but data, or that torch cannot read, is a one-line error here —
    before any rank starts and before anything is written — rather than the resume falling back
    to an older round or failing inside a rank."""
    round_dir = Path(run_dir) / "checkpoints" / f"round_{k}"
    for name in sorted(_file_silos(round_dir)):
        load_data_file(round_dir / name, mmap=True)


def _file_silos(round_dir: Path) -> dict[str, list[int]]:
    """Which silos each checkpoint file of a round holds (from its manifest; a round written
    before per-rank files, one ``silo_<i>.pt`` per silo, is listed from its file names)."""
    manifest = round_dir / "manifest.json"
    if manifest.is_file():
        files = json.loads(manifest.read_text())["files"]
        if all("silos" in meta for meta in files.values()):
            return {name: meta["silos"] for name, meta in files.items()}
    return {p.name: [int(p.stem.split("_")[1])] for p in sorted(round_dir.glob("silo_*.pt"))}


def _read_file(path: Path, device) -> dict[int, dict[str, Any]]:
    """{silo: its state} from one checkpoint file, either layout; memory-mapped, so the silos a
    rank does not need are never read into memory."""
    state = load_data_file(path, device, mmap=True)
    if "silos" in state:
        return state["silos"]
    return {int(path.stem.split("_")[1]): state}


def load_silo_states(round_dir: str | Path, silos=None, device: str | torch.device = "cpu") -> dict[int, dict[str, Any]]:
    """{silo: {"model", "optimizer", "batches", "algorithm"}} of round_dir's checkpoint, for
    ``silos`` (default: every silo in it); reads only the files holding them."""
    round_dir = Path(round_dir)
    wanted = None if silos is None else set(silos)
    out: dict[int, dict[str, Any]] = {}
    for name, held in sorted(_file_silos(round_dir).items()):
        if wanted is None or wanted & set(held):
            for i, state in _read_file(round_dir / name, device).items():
                if wanted is None or i in wanted:
                    out[i] = _in_memory(state)
    return dict(sorted(out.items()))


class Checkpointer:
    """Saves and restores this rank's silos (``checkpoints/round_<k>/rank_<r>.pt``)."""

    def __init__(self, run_dir: Path, fed, algo, config: CheckpointConfig | None = None, rounds: int = 0) -> None:
        self.dir = Path(run_dir) / "checkpoints"
        self.fed = fed
        self.algo = algo
        self.config = config or CheckpointConfig()
        self.rounds = rounds

    def due(self, k: int) -> bool:
        """Whether round ``k`` is checkpointed (``checkpoint.every``; always the last round)."""
        return self.config.due(k, self.rounds)

    def save(self, k: int, extra: dict[str, Any]) -> None:
        """Every hosted silo's state after round ``k`` (present or not) in this rank's file, then,
        once all ranks have written (a gather: a collective), the manifest and the marker; older
        rounds go. The file is streamed to disk and hashed from there: no second copy in memory."""
        round_dir = self.dir / f"round_{k}"
        round_dir.mkdir(parents=True, exist_ok=True)
        silos = {
            i: {
                "model": saveable_state(silo.model, self.fed.device),
                "optimizer": silo.optimizer.state_dict(),
                "batches": silo.batches.state_dict(),
                "algorithm": self.algo.silo_state(i),
                "federation": self.fed.silo_state(i),  # privacy accountant, codec references
            }
            for i, silo in sorted(self.fed.hosted.items())
        }
        name = f"rank_{self.fed.rank}.pt"
        path = round_dir / name
        tmp = path.with_suffix(".pt.tmp")
        torch.save({"round": k, "silos": silos}, tmp)
        del silos
        digest = _sha256(tmp)
        os.replace(tmp, path)
        files = {name: {"bytes": path.stat().st_size, "sha256": digest, "silos": sorted(self.fed.hosted)}}
        gathered = gather_objects(files)
        if gathered is None:  # not rank 0
            return
        every = {name: meta for part in gathered for name, meta in part.items()}
        atomic_write(json.dumps({"round": k, **extra, "files": every}), round_dir / "manifest.json")
        atomic_write(json.dumps({"round": k, **extra}), self.dir / "latest.json")
        for old in [r for r in _rounds_on_disk(self.dir) if r < k][KEEP - 1:]:
            shutil.rmtree(self.dir / f"round_{old}", ignore_errors=True)

    def restore(self, k: int) -> dict[str, Any]:
        """Load round ``k`` into this rank's silos; return what :meth:`save` stored beside it."""
        round_dir = self.dir / f"round_{k}"
        states = load_silo_states(round_dir, self.fed.hosted, self.fed.device)
        for i, silo in self.fed.hosted.items():
            if i not in states:
                raise FedsimError(f"{round_dir}: no checkpoint of silo {i}; was the run started with a different "
                                  "topology?")
            state = states.pop(i)
            silo.model.load_state_dict(state["model"])
            silo.optimizer.load_state_dict(state["optimizer"])
            silo.batches.load_state_dict(state["batches"])
            self.algo.load_silo_state(i, state["algorithm"])
            self.fed.load_silo_state(i, state.get("federation", {}))
        return checkpoint_extra(self.dir.parent, k)


class AttemptLog:
    """How long each attempt at a run took (``checkpoints/attempts.json``): a run restarted after
    a crash (``--max-restarts``, torchrun) or continued with ``--resume`` spans several starts of
    its ranks, and its wall time is their sum — each attempt counted to its last finished round, so
    the rounds a crash made the run repeat are counted as the time they took. Every rank reads the
    earlier attempts (their total offsets the ``wall_time_s`` of the records); rank 0 writes.

    The file is rewritten after a checkpointed round and otherwise at most every
    :attr:`FLUSH_S` seconds (a file write per round is a measurable share of a 1-step round), so a
    crash may leave the last attempt short by up to that much."""

    FLUSH_S = 5.0

    def __init__(self, run_dir: str | Path, resumed: bool, start_round: int, writer: bool,
                 config_changes: dict[str, list] | None = None) -> None:
        self.path = Path(run_dir) / "checkpoints" / "attempts.json"
        self.writer = writer
        earlier: list[dict[str, Any]] = []
        if resumed and self.path.is_file():
            try:
                earlier = [a for a in json.loads(self.path.read_text()) if isinstance(a, dict)]
            except (OSError, ValueError):
                earlier = []
        #: wall seconds of the attempts before this one
        self.before = sum(float(a.get("wall_s", 0.0)) for a in earlier)
        entry: dict[str, Any] = {"attempt": len(earlier) + 1, "start_round": start_round, "wall_s": 0.0}
        if config_changes:
            entry["config_changes"] = config_changes  # result-neutral keys changed on --resume: [before, now]
        self.attempts = [*earlier, entry]
        self._written = 0.0
        self._write()

    def update(self, wall_s: float, flush: bool = True) -> None:
        """This attempt has run ``wall_s`` seconds (called after each round); written to the file
        when ``flush`` (a checkpointed round) or :attr:`FLUSH_S` seconds after the last write."""
        self.attempts[-1]["wall_s"] = wall_s
        if flush or time.monotonic() - self._written >= self.FLUSH_S:
            self._write()

    def summary(self, wall_s: float) -> dict[str, Any]:
        """``wall_time_s`` over every attempt, how many there were and each one's share."""
        self.update(wall_s)
        walls = [a["wall_s"] for a in self.attempts]
        return {"wall_time_s": sum(walls), "attempts": len(walls), "wall_time_s_by_attempt": walls}

    def _write(self) -> None:
        self._written = time.monotonic()
        if self.writer:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(json.dumps(self.attempts), self.path)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def _in_memory(obj: Any) -> Any:
    """``obj`` with every tensor copied out of the memory-mapped file (an optimiser would
    otherwise keep updating pages of a file that the next rounds delete)."""
    if isinstance(obj, torch.Tensor):
        return obj.clone()
    if isinstance(obj, dict):
        return {k: _in_memory(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_in_memory(v) for v in obj)
    return obj
