"""Run a stage's main() with clean errors: `error: <message>` and exit 1, no traceback.

Known errors are the project's own (any exception class named *Error defined in a `charrnn`
module, e.g. CorpusError, ParamsError); anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import os
import sys
from typing import Callable


def run_stage(main: Callable[[], None]) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before anything imports TensorFlow
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
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
