"""Hand a trained model's MLflow run everything the working tree holds for that model.

Whatever DVC runs or skips, every run that trains a model ends up with that model's held-out
metrics, samples and registered MLflow Model: in a fresh clone, for example, `dvc repro`
retrains (no DVC cache), then skips evaluate_perplexity, whose committed metrics file already
matches the byte-identical model. So train, evaluate_perplexity and sample each end with
`publish()`, which logs what belongs to the model (charrnn.outputs tells) and skips the rest.
Tracking only: nothing here changes a DVC output.
"""
from __future__ import annotations

from pathlib import Path

from charrnn.core import files, metricfiles, paths
from charrnn.tracking import provenance, registry, runs

# Numbers of the metrics files that are no figure of the model: the same for every run of a corpus
# and settings, MLflow would show them as metrics to compare. The held-out text's length is a tag.
NOT_FIGURES = {
    "chars",  # perplexity.json: the held-out characters, fixed by the corpus and data.val_fraction
    "copy_ngram",  # samples.json: sample.copy_ngram, a param of the run already
    "sample_chars",  # samples.json: fixed by sample.num_chars and the prompts, as ngrams_<n> are
}
HELD_OUT_CHARS_TAG = "charrnn.held_out_chars"


def _figures(metrics: dict) -> dict:
    """The metrics that tell runs apart (ngrams_<n>: how many n-grams the samples hold)."""
    return {k: v for k, v in metrics.items() if k not in NOT_FIGURES and not k.startswith("ngrams_")}


def publish(run, params, full_hash: str) -> None:
    """Give the model's run (tracking.Run) whatever the working tree holds for this model: the
    held-out metrics, the samples and their metrics, and the generator as a registered MLflow
    Model tagged with the held-out bits per character."""
    if not run.active:
        return
    held_out = metricfiles.of_model(paths.HELD_OUT, paths.EVALUATION, full_hash)
    if held_out is not None:
        run.log_metrics(metricfiles.numbers(_figures(held_out), "held_out_"))
        if isinstance(held_out.get("chars"), int):
            run.set_tags({HELD_OUT_CHARS_TAG: str(held_out["chars"])})
    sampled = metricfiles.of_model(paths.SAMPLE_METRICS, paths.SAMPLING, full_hash)
    if sampled is not None:
        run.log_metrics(metricfiles.numbers(_figures(sampled)))
        run.log_artifacts(paths.SAMPLES, "samples")
        run.log_artifact(paths.SAMPLING)
    tags = {registry.HELD_OUT_BPC_TAG: f"{held_out['bpc']:.4f}"} if held_out is not None else {}
    name = params.tracking.registered_model
    if sampled is not None and (paths.GENERATOR / "saved_model.pb").is_file():
        tags.update(provenance.dvc_tags())
        tags.update(provenance.corpus_tags(Path("."), params))
        registry.register(run, name, paths.GENERATOR, paths.MODEL / "vocab.json", full_hash, tags,
                          registry.signature_defaults(params.sample))
    elif tags:
        registry.tag_version(run, name, full_hash, tags)


def publish_training(run, params, history) -> str:
    """Everything the training run gets once the model is saved: the model's, corpus's and
    vocabulary's content hashes as tags, the model, vocabulary and loss history as artifacts, the
    loss curve as a picture, then whatever else the working tree holds for this model (publish).
    The model's content hash."""
    from charrnn.nn import history as losses

    model_hash = metricfiles.model_hash()
    run.set_tags({runs.MODEL_HASH_TAG: model_hash, "charrnn.corpus_hash": files.sha256_tree(paths.CORPUS),
                  "charrnn.vocab_hash": files.sha256_tree(paths.VOCAB)})
    run.log_artifacts(paths.MODEL, "model")
    run.log_artifact(paths.VOCAB)
    log_documents(run)
    run.log_artifact(paths.METRICS / "history.csv")
    run.log_figure(lambda: losses.loss_figure(history), "loss_curve.png")
    publish(run, params, model_hash)  # what DVC may skip for this model
    return model_hash


def log_documents(run) -> None:
    """The corpus's documents (data/raw/documents.json: each one's name, bytes, sha256 and place
    in the corpus) as an artifact of the run, so the run says which files it learned from."""
    if paths.DOCUMENTS.is_file():
        run.log_artifact(paths.DOCUMENTS)
