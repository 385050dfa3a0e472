"""DVC stage evaluate_perplexity: model + held-out tail of the corpus -> metrics/perplexity.json."""
import _bootstrap  # noqa: F401  (project venv + this checkout's src; see stages/_bootstrap.py)

from charrnn import tracking
from charrnn.core import metricfiles, paths
from charrnn.core.params import Params
from charrnn.core.stage import run_stage


def main() -> None:
    params = Params.load(paths.PARAMS)
    from charrnn.nn import evaluation, network, pools

    pools.fix(params.train.threads)  # as training's: a product's sums depend on them
    model, vocab = network.load(paths.MODEL)
    result = evaluation.evaluate_corpus(model, vocab, paths.CORPUS, params.data.val_fraction,
                                        params.evaluate.batch_size, params.seq_length)
    model_hash = metricfiles.model_hash()
    metricfiles.write(paths.HELD_OUT, result, paths.EVALUATION, model_hash)
    with tracking.model_run(params, paths.project_root(), model_hash, stage="evaluate_perplexity") as run:
        tracking.publish(run, params, model_hash)
    print(f"held-out loss {result['loss']:.4f} nats/char, perplexity {result['perplexity']:.3f}, "
          f"{result['bpc']:.4f} bits/char over {result['chars']:,} characters -> {paths.HELD_OUT}")


if __name__ == "__main__":
    run_stage(main)
