"""The one base class of errors a user can fix (a bad flag, file or setting).

The command line turns an ``EdlmError`` into one line ``edlm: error: ...`` and exit status 2. Any other
exception is a bug in edlm or below it and is shown with its traceback, so that it can be reported.
"""

from __future__ import annotations


class EdlmError(Exception):
    """A bad input the user can fix; the message names the flag, file or setting."""
