"""charrnn: a reproducible character-level RNN pipeline (DVC + TensorFlow/Keras + MLflow)."""

__version__ = "0.2.0"
