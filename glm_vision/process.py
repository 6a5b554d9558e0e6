"""Leaving the process once everything is written."""

from __future__ import annotations

import atexit
import os
import sys


def exit_now(code: int) -> None:
    """Exit with `code` without the interpreter's native teardown. Our own clean-up (atexit: the
    private upload directory, logging) still runs; what is skipped is the teardown in which a native
    thread pool of the model stack (torch / tokenizers) has been seen to abort under CPU load
    ("terminate called without an active exception"), turning a finished run into exit status 134."""
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
