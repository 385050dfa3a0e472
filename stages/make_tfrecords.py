"""DVC stage make_tfrecords: corpus + vocabulary -> data/records/ (train/val shards), metrics/records.json."""
import _bootstrap  # noqa: F401  (project venv + this checkout's src; see stages/_bootstrap.py)
from tqdm import tqdm

from charrnn.core import files, paths
from charrnn.core.params import Params
from charrnn.core.stage import run_stage
from charrnn.data import records
from charrnn.data.vocab import Vocabulary


def progress(chunks, name):
    return tqdm(chunks, desc=f"encoding {name}", unit="chunk", leave=False, disable=None)


def main() -> None:
    params = Params.load(paths.PARAMS)
    vocab = Vocabulary.load(paths.VOCAB)
    meta = records.write_records(paths.CORPUS, vocab, paths.RECORDS, params.seq_length,
                                 params.data.val_fraction, params.data.shard_mb, progress)
    metrics = records.records_metrics(meta)
    files.write_json(paths.METRICS / "records.json", metrics)
    print(f"records: {meta.train_windows:,} training and {meta.val_windows:,} validation windows "
          f"of {meta.seq_length + 1} ids -> {paths.RECORDS}/")


if __name__ == "__main__":
    run_stage(main)
