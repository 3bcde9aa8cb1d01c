"""The errors graphrec reports as a message instead of a traceback. ``graphrec.cli`` turns a
UserError into exit 2 and a WorkFailed into exit 1; any other exception is a bug and keeps its
traceback (a bare ValueError or KeyError from deep inside is never mistaken for bad input)."""

from __future__ import annotations


class UserError(Exception):
    """Bad input or usage: the message names the file, line or value and the fix (exit 2)."""


class WorkFailed(Exception):
    """The work itself failed: a server, a download, an integrity check (exit 1)."""


class BadValue(UserError, ValueError):
    """A value out of its range or of the wrong form: typed model arguments, CLI and config values."""


class UnknownId(UserError, KeyError):
    """A user or item id that is not in the data set."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""
