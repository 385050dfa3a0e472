"""DVC stage train: records + vocabulary (+ data/parent.json, the parent model of a fine-tuning) ->
data/model/, metrics/train.json, history and throughput plots."""
import _bootstrap  # noqa: F401  (project venv + this checkout's src; see stages/_bootstrap.py)
import dataclasses
import os

from charrnn import tracking
from charrnn.core import files, paths
from charrnn.core.params import Params
from charrnn.core.stage import run_stage
from charrnn.data.vocab import Vocabulary
from charrnn.nn import lineage, memory, workers


def main() -> None:
    params = Params.load(paths.PARAMS)
    vocab = Vocabulary.load(paths.VOCAB)
    recorded = lineage.read_record(paths.PARENT, params.train.init_from)
    with tracking.resolved_parent(paths.project_root(), recorded.pinned if recorded else "") as found:
        if found:
            lineage.check_same(recorded, found.parent.model_hash)
            params = dataclasses.replace(params, train=lineage.train_params(params.train, found.model.config))
        memory.check_training(params, vocab)
        if not workers.is_chief():  # in a multi-worker cluster, only the chief logs the run
            os.environ["CHARRNN_TRACKING"] = "0"
        from charrnn.nn import network, training  # import TensorFlow

        training.configure(params.train.seed, params.train.threads)
        parent = network.load(found.model.path)[0] if found else None
    tags = {**training.environment_tags(), **(tracking.parent_tags(paths.project_root(), recorded)
                                                if recorded and tracking.is_enabled(params.tracking) else {})}
    with tracking.train_run(params, paths.project_root(), tags=tags) as run:
        result = training.train(params.train, paths.RECORDS, vocab, backup_dir=paths.TRAIN_BACKUP,
                                on_epoch=lambda epoch, metrics: run.log_metrics(metrics, step=epoch),
                                parent=parent, parent_hash=recorded.model_hash if recorded else "")
        summary = {**result.summary, **recorded.metrics()} if recorded else result.summary
        network.save(result.model, vocab, paths.MODEL)
        files.write_text(paths.METRICS / "history.csv", result.history.to_csv(index=False))
        files.write_text(paths.METRICS / "throughput.csv", result.throughput.to_csv(index=False))
        files.write_json(paths.METRICS / "train.json", summary)
        tracking.publish_training(run, params, result.history)
    result.checkpoints.clear()  # every output is in place: nothing left to resume
    origin = f" (fine-tuned from {recorded.pinned})" if recorded else ""
    print(f"trained {summary['epochs']} epoch(s); kept epoch {summary['model_epoch']}: loss {summary['loss']:.4f}, "
          f"val_loss {summary['val_loss']:.4f} -> {paths.MODEL}/{origin}")


if __name__ == "__main__":
    run_stage(main)
