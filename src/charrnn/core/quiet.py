"""TensorFlow without its known C++ start-up lines, and nothing else hidden.

`quiet_tensorflow()`, called before anything imports TensorFlow (stages/_bootstrap.py, the CLI,
bench/, the tests), sets TF_CPP_MIN_LOG_LEVEL=1: TensorFlow's INFO lines go (`I0000 ...
cpu_feature_guard ...`), its warnings and errors stay, so a GPU user still sees that a CUDA
library failed to load. While `tensorflow` itself is imported, what native code writes to file
descriptor 2 is held back and then written out without the lines in NOISE, which TensorFlow
prints whatever the log level says on some machines. Python exceptions are unaffected.
CHARRNN_TF_LOGS=1 shows everything again.
"""
from __future__ import annotations

import contextlib
import importlib.machinery
import os
import re
import sys
import tempfile

SWITCH = "CHARRNN_TF_LOGS"
NOISE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IW]\d{4} [^\]]*(cpu_feature_guard|port)\.cc:\d+\] "  # this binary's instructions; oneDNN ops on
    r"|To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags\."
)


def quiet_tensorflow() -> None:
    if os.environ.get(SWITCH, "").strip().lower() in ("1", "true", "yes", "on"):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietImport())


def without_noise(text: str) -> str:
    return "".join(line for line in text.splitlines(keepends=True) if not NOISE.match(line))


@contextlib.contextmanager
def stderr_filtered():
    """Inside the block, descriptor 2 goes to a temporary file; afterwards its lines, less the
    known noise, go to the real descriptor 2 (also when the block raises)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = without_noise(held.read().decode("utf-8", errors="replace"))
            if kept:
                os.write(2, kept.encode("utf-8"))


class _QuietImport:
    """A meta path finder that runs the import of the top-level `tensorflow` package (and so of
    its native libraries) inside stderr_filtered(), then steps aside."""

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
        with stderr_filtered():
            self._loader.exec_module(module)

    def __getattr__(self, name):
        return getattr(self._loader, name)
