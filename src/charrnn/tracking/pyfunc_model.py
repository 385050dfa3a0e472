"""The MLflow pyfunc model of a trained charrnn generator.

MLflow copies this file into every logged model (models from code) and runs it when the model is
loaded, by `mlflow.pyfunc.load_model("models:/charrnn@champion")` or `mlflow models serve`. It
needs TensorFlow and MLflow only, not charrnn: the exported generator (a SavedModel, the model's
artifact `generator`) holds the weights, the vocabulary and the sampling graph.

Input: a list of prompt strings. Output: each prompt followed by its generated text. Params:
num_chars, temperature, seed, top_k, top_p (their defaults are in the model's signature).
"""
from __future__ import annotations

import mlflow
import tensorflow as tf
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE


class CharRNNGenerator(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        self.generator = tf.saved_model.load(context.artifacts["generator"])
        self.defaults = dict(context.model_config or {})

    def predict(self, context, model_input: list[str], params: dict | None = None) -> list[str]:
        settings = {**self.defaults, **(params or {})}
        prompts = [str(p) for p in _prompts(model_input)]
        try:
            out = self.generator.generate(
                tf.constant(prompts, tf.string), tf.constant(int(settings["num_chars"]), tf.int32),
                tf.constant(float(settings["temperature"]), tf.float32), tf.constant(int(settings["seed"]), tf.int64),
                tf.constant(int(settings["top_k"]), tf.int32), tf.constant(float(settings["top_p"]), tf.float32))
        except (tf.errors.InvalidArgumentError, ValueError, OverflowError) as e:
            message = getattr(e, "message", None) or str(e)
            raise MlflowException(f"invalid request: {message.splitlines()[0]}", error_code=INVALID_PARAMETER_VALUE) from None
        return [s.decode("utf-8") for s in out.numpy()]


def _prompts(model_input) -> list:
    """The prompts of a list, a pandas Series or a one-column DataFrame (how MLflow may pass them)."""
    if hasattr(model_input, "columns"):
        return list(model_input.iloc[:, 0])
    return list(model_input)


mlflow.models.set_model(CharRNNGenerator())
