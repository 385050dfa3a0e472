"""charrnn: a reproducible character-level RNN pipeline (DVC + TensorFlow/Keras + MLflow)."""
from charrnn.core import isa

isa.pin()  # before anything imports TensorFlow: the same kernels on every x86-64 CPU with AVX2

__version__ = "0.2.0"
