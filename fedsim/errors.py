"""Errors a user can cause: the CLI prints the message on one line and exits with status 2."""

from __future__ import annotations


class FedsimError(Exception):
    """Base class of every user-facing error; the message must say what to fix."""


class TopologyError(FedsimError):
    """A topology file (YAML or GML) that cannot be used."""


class ConfigError(FedsimError):
    """An experiment config or a ``--set`` override that cannot be used."""


class DataError(FedsimError):
    """A data folder or data setting that cannot be used."""


class EMDError(FedsimError):
    """Bad input to the Earth Mover's Distance layer."""


class UnreadableFileError(FedsimError):
    """A checkpoint or model file that cannot be read as data (damaged, or not a torch file)."""


class UnsafeFileError(UnreadableFileError):
    """A checkpoint or model file holding something other than data (a function or a class that
    unpickling would call): refused unread, so nothing in it runs."""


class SiloFailure(FedsimError):
    """A silo (rank) died or stopped answering within the configured timeout."""

    def __init__(self, message: str, ranks: list[int] | None = None) -> None:
        super().__init__(message)
        self.ranks = ranks or []
