"""Imported first by every stage: run on the project's venv and on this checkout's own code.

`dvc repro` may be called from any environment, and `dvc exp run --temp`/queued experiments run
in a copy of the repository under .dvc/tmp/exps/ that has no venv of its own. So: re-exec with the
interpreter of the nearest enclosing `.venv` (or $CHARRNN_PYTHON) if this is not it, and put this
checkout's src/ first on sys.path so a temporary copy runs its own code, not the installed one.
Then charrnn.core.stage.install() makes even a Ctrl-C during the stage's imports end cleanly.
"""
import os  # both loaded by the interpreter before any script: their import cannot be interrupted
import sys


def _early_exit(kind, e, tb):
    """Until charrnn.core.stage.install() below takes over: a Ctrl-C or SIGTERM while starting ends
    quietly with 130 / 143, as it would later."""
    if issubclass(kind, KeyboardInterrupt):
        print("interrupted while starting", file=sys.stderr, flush=True)
        os._exit(143 if getattr(e, "sigterm", False) else 130)
    sys.__excepthook__(kind, e, tb)


def _early_sigterm(signum, frame):
    e = KeyboardInterrupt()
    e.sigterm = True
    raise e


sys.excepthook = _early_exit  # first: a Ctrl-C may come while `signal` below is still importing
import signal  # noqa: E402

signal.signal(signal.SIGTERM, _early_sigterm)
# A Ctrl-C or SIGTERM held back while the interpreter below started (or by whoever started this
# one with them blocked) is delivered now, into _early_exit: Python's own start-up, before the
# first line of a script, is the one moment no script can answer for itself.
_STOPS = {signal.SIGINT, signal.SIGTERM}
signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOPS)

from pathlib import Path  # noqa: E402

_root = Path(__file__).resolve().parent.parent


def _venv_python() -> Path | None:
    if os.environ.get("CHARRNN_PYTHON"):
        python = Path(os.environ["CHARRNN_PYTHON"])
        if not (python.is_file() and os.access(python, os.X_OK)):
            print(f"error: CHARRNN_PYTHON={python} is not an executable file: point it at a Python "
                  "interpreter with charrnn's requirements, or unset it to use the project's .venv",
                  file=sys.stderr)
            sys.exit(1)
        return python
    for folder in (_root, *_root.parents):
        if (folder / ".venv" / "bin" / "python").exists():
            return folder / ".venv" / "bin" / "python"
    return None


def _in(python: Path) -> bool:
    if python.parent.parent.joinpath("pyvenv.cfg").exists():  # a venv: compare prefixes
        return Path(sys.prefix).resolve() == python.parent.parent.resolve()
    return Path(sys.executable).resolve() == python.resolve()


try:
    _python = _venv_python()
    if _python is not None and not _in(_python) and not os.environ.get("CHARRNN_BOOTSTRAPPED"):
        os.environ["CHARRNN_BOOTSTRAPPED"] = "1"  # never loop
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOPS)  # the mask survives exec; see above
        os.execv(str(_python), [str(_python), *sys.argv])
except OSError as e:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOPS)
    print(f"error: cannot run {_python}: {e.strerror}", file=sys.stderr)
    sys.exit(1)
sys.path.insert(0, str(_root / "src"))

from charrnn.core import stage  # noqa: E402  (light: no TensorFlow, no MLflow)

stage.install()
