"""TensorFlow without its C++ log lines.

Importing TensorFlow prints lines such as `I0000 ... oneDNN custom operations are on` and
`WARNING: All log messages before absl::InitializeLog() ...` straight to file descriptor 2,
before its own log level applies; later, `E0000 ... oneDNN supports DT_INT32 only on platforms
with AVX-512` reads like an error and is not one. `quiet_tensorflow()`, called before anything
imports TensorFlow (stages/_bootstrap.py, the CLI, bench/, the tests), sets
TF_CPP_MIN_LOG_LEVEL=3 and points descriptor 2 at /dev/null while `tensorflow` itself is
imported. Python exceptions are unaffected. CHARRNN_TF_LOGS=1 shows everything again.
"""
from __future__ import annotations

import contextlib
import importlib.machinery
import os
import sys

SWITCH = "CHARRNN_TF_LOGS"


def quiet_tensorflow() -> None:
    if os.environ.get(SWITCH, "").strip().lower() in ("1", "true", "yes", "on"):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietImport())


@contextlib.contextmanager
def stderr_to_devnull():
    """Descriptor 2 points at /dev/null inside the block (what C++ code writes is dropped)."""
    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


class _QuietImport:
    """A meta path finder that runs the import of the top-level `tensorflow` package (and so of
    its native libraries) inside stderr_to_devnull(), then steps aside."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


class _QuietLoader:
    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = self._loader
        with stderr_to_devnull():
            self._loader.exec_module(module)

    def __getattr__(self, name):
        return getattr(self._loader, name)
