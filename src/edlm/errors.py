"""The one base class of errors a user can fix (a bad flag, file or setting).

The command line turns an ``EdlmError`` into one line ``edlm: error: ...`` and exit status 2. Any other
exception is a bug in edlm or below it and is shown with its traceback, so that it can be reported.

Library code does not know the command line: an error about one input says which in ``subject`` (a Python
argument name such as ``energy`` or ``length``) and its message starts with that word
(``energy 'bert:x': unknown energy 'bert'``); the command line shows the subject as its flag
(``--energy 'bert:x': unknown energy 'bert'``, ``flag_message``).
"""

from __future__ import annotations


class EdlmError(Exception):
    """A bad input the user can fix; the message names the input (``subject``), file or setting."""

    def __init__(self, message: str = "", subject: str | None = None):
        super().__init__(message)
        self.subject = subject

    def __str__(self) -> str:
        return self._named(self.subject or "")

    def flag_message(self) -> str:
        """The message as the command line shows it: the subject as its flag (``length`` -> ``--length``)."""
        return self._named(f"--{self.subject.replace('_', '-')}" if self.subject else "")

    def _named(self, name: str) -> str:
        message = super().__str__()
        if not name:
            return message
        return f"{name}{message}" if message[:1] in (":", ",") else f"{name} {message}"
