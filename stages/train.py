"""DVC stage train: records + vocabulary -> data/model/, metrics/train.json, history and throughput plots."""
import _bootstrap  # noqa: F401  (project venv + this checkout's src; see stages/_bootstrap.py)
import os

from charrnn import tracking
from charrnn.core import files, paths
from charrnn.core.params import Params
from charrnn.core.stage import run_stage
from charrnn.data.vocab import Vocabulary
from charrnn.nn import memory, workers


def main() -> None:
    params = Params.load(paths.PARAMS)
    vocab = Vocabulary.load(paths.VOCAB)
    memory.check_training(params, vocab)
    if not workers.is_chief():  # in a multi-worker cluster, only the chief logs the run
        os.environ["CHARRNN_TRACKING"] = "0"
    from charrnn.nn import network, training  # import TensorFlow

    training.configure(params.train.seed, params.train.threads)
    with tracking.train_run(params, paths.project_root(), tags=training.environment_tags()) as run:
        result = training.train(params.train, paths.RECORDS, vocab, backup_dir=paths.TRAIN_BACKUP,
                                on_epoch=lambda epoch, metrics: run.log_metrics(metrics, step=epoch))
        network.save(result.model, vocab, paths.MODEL)
        files.write_text(paths.METRICS / "history.csv", result.history.to_csv(index=False))
        files.write_text(paths.METRICS / "throughput.csv", result.throughput.to_csv(index=False))
        files.write_json(paths.METRICS / "train.json", result.summary)
        tracking.publish_training(run, params, result.history)
    result.checkpoints.clear()  # every output is in place: nothing left to resume
    summary = result.summary
    print(f"trained {summary['epochs']} epoch(s); kept epoch {summary['model_epoch']}: loss {summary['loss']:.4f}, "
          f"val_loss {summary['val_loss']:.4f} -> {paths.MODEL}/")


if __name__ == "__main__":
    run_stage(main)
