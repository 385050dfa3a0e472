"""The MLflow pyfunc model of a trained charrnn generator.

MLflow copies this file into every logged model (models from code), with the charrnn package that
logged it (code_paths), and runs it when the model is loaded, by
`mlflow.pyfunc.load_model("models:/charrnn@champion")` or `mlflow models serve`. So a registered
model carries the code of its own version: the exported generator (a SavedModel: the weights, the
vocabulary and the sampling graph) is run by charrnn.sampling.generation, and every request is
checked by the rules every other door applies (charrnn.sampling.settings).

Input: a list of prompt strings. Output: each prompt followed by its generated text. Params:
num_chars, temperature, top_k, top_p, seed (their defaults, the run's sample settings, are in the
model's signature). A request the rules refuse is an MlflowException of INVALID_PARAMETER_VALUE
(HTTP 400 from `mlflow models serve`) saying why.
"""
from __future__ import annotations

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from charrnn.data.vocab import Vocabulary
from charrnn.sampling.generation import Engine, configure_threads
from charrnn.sampling.settings import SamplingSettings, SettingsError, check_prompts


class CharRNNGenerator(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        configure_threads()
        self.engine = Engine.load(context.artifacts["generator"])
        self.vocab = Vocabulary.load(context.artifacts["vocab"])
        self.defaults = SamplingSettings.parse(dict(context.model_config or {}))

    def predict(self, context, model_input: list[str], params: dict | None = None) -> list[str]:
        try:
            settings = SamplingSettings.parse(dict(params or {}), self.defaults)
            prompts = _prompts(model_input)
            check_prompts(self.vocab, prompts)
        except (SettingsError, TypeError) as e:
            raise MlflowException(f"invalid request: {e}", error_code=INVALID_PARAMETER_VALUE) from None
        return self.engine.generate_text(prompts, settings, self.vocab)


def _prompts(model_input) -> list:
    """The prompts of a list, a pandas Series or a one-column DataFrame (how MLflow may pass them)."""
    if hasattr(model_input, "columns"):
        return list(model_input.iloc[:, 0])
    return list(model_input)


mlflow.models.set_model(CharRNNGenerator())
