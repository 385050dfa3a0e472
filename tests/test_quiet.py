"""core/quiet.py hides TensorFlow's known start-up lines and nothing else: a CUDA library error
written by native code while TensorFlow loads still reaches stderr."""
import os
import subprocess
import sys

from tests.project import REPO

NATIVE = """import os
os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n")
os.write(2, b"I0000 00:00:1796195136.853025   18980 cpu_feature_guard.cc:227] This TensorFlow binary is optimized.\\n")
os.write(2, b"To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with the "
            b"appropriate compiler flags.\\n")
os.write(2, b"W0000 00:00:1.0  1 dso_loader.cc:64] Could not load dynamic library 'libcudnn.so.9'\\n")
os.write(2, b"E0000 00:00:1.0  1 cuda_driver.cc:282] failed call to cuInit: CUDA_ERROR_UNKNOWN\\n")
"""


def run_import(tmp_path, **env):
    """Import a stand-in `tensorflow` whose import writes these lines to descriptor 2, as the
    native libraries do, under quiet_tensorflow()."""
    (tmp_path / "tensorflow").mkdir()
    (tmp_path / "tensorflow" / "__init__.py").write_text(NATIVE)
    code = ("from charrnn.core.quiet import quiet_tensorflow\nquiet_tensorflow()\nimport tensorflow\n"
            "import os; print(os.environ['TF_CPP_MIN_LOG_LEVEL'])")
    base = {k: v for k, v in os.environ.items() if k not in ("CHARRNN_TF_LOGS", "TF_CPP_MIN_LOG_LEVEL")}
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True,
                          env={**base, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO / 'src'}", **env})


def test_known_noise_goes_and_cuda_errors_stay(tmp_path):
    done = run_import(tmp_path)
    assert done.stderr.splitlines() == [
        "W0000 00:00:1.0  1 dso_loader.cc:64] Could not load dynamic library 'libcudnn.so.9'",
        "E0000 00:00:1.0  1 cuda_driver.cc:282] failed call to cuInit: CUDA_ERROR_UNKNOWN",
    ]
    assert done.stdout.strip() == "1"  # TensorFlow's own INFO lines off, its warnings and errors on


def test_the_switch_shows_everything(tmp_path):
    done = run_import(tmp_path, CHARRNN_TF_LOGS="1", TF_CPP_MIN_LOG_LEVEL="0")
    assert len(done.stderr.splitlines()) == 5
