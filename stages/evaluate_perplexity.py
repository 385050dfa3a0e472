"""DVC stage evaluate_perplexity: model + held-out tail of the corpus -> metrics/perplexity.json."""
import _bootstrap  # noqa: F401  (project venv + this checkout's src; see stages/_bootstrap.py)
import numpy as np

from charrnn import files, paths, tracking
from charrnn.params import Params
from charrnn.stage import run_stage


def main() -> None:
    params = Params.load(paths.PARAMS)
    from charrnn import evaluation, records
    from charrnn import model as model_lib

    vocab = model_lib.load_vocab(paths.MODEL)
    model = model_lib.load(paths.MODEL, vocab)
    split = records.split_point(records.count_corpus_chars(paths.CORPUS), params.data.val_fraction)
    ids = np.concatenate(list(records.iter_ids(paths.CORPUS, vocab, start=split)))
    result = evaluation.held_out_loss(model, ids, params.evaluate.batch_size, params.seq_length)
    files.write_json(paths.METRICS / "perplexity.json", result)
    with tracking.model_run(params, tracking.find_root(), files.sha256_tree(paths.MODEL),
                             stage="evaluate_perplexity") as run:
        run.log_metrics({f"held_out_{k}": v for k, v in result.items()})
    print(f"held-out loss {result['loss']:.4f} nats/char, perplexity {result['perplexity']:.3f}, "
          f"{result['bpc']:.4f} bits/char over {result['chars']:,} characters -> metrics/perplexity.json")


if __name__ == "__main__":
    run_stage(main)
