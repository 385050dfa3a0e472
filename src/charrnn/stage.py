"""Run a stage's main() with clean errors: `error: <message>` and exit 1, no traceback.

Known errors are the project's own (any exception class named *Error defined in a `charrnn`
module, e.g. CorpusError, ParamsError); anything else is a bug and keeps its traceback.
Ctrl-C (SIGINT) and SIGTERM unwind the stack like an error, so every temporary output is
removed on the way out, then print one line and exit 130 / 143. SIGKILL cannot be caught:
there, the temp-file-and-rename writes (charrnn.files) are what keep outputs whole.
"""
from __future__ import annotations

import os
import signal
import sys
from typing import Callable


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C."""


def _raise_terminated(signum, frame):
    raise Terminated()


def run_stage(main: Callable[[], None]) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before anything imports TensorFlow
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        main()
    except KeyboardInterrupt as e:
        terminated = isinstance(e, Terminated)
        print(f"interrupted ({'SIGTERM' if terminated else 'Ctrl-C'}); outputs left as they were, "
              "run `dvc repro` again to continue", file=sys.stderr)
        sys.exit(143 if terminated else 130)
    except Exception as e:
        if not is_project_error(e):
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


def is_project_error(e: BaseException) -> bool:
    return any(
        cls.__name__.endswith("Error") and cls.__module__.split(".")[0] == "charrnn"
        for cls in type(e).__mro__
    )
