"""DVC stage build_vocab: data/raw/corpus.txt -> data/vocab.json, metrics/vocab.json (which lists the
documents of a corpus of many, from data/raw/documents.json), data/parent.json (the parent model of
a fine-tuning, whose vocabulary this one extends; see charrnn.nn.lineage)."""
import _bootstrap  # noqa: F401  (project venv + this checkout's src; see stages/_bootstrap.py)
from tqdm import tqdm

from charrnn import tracking
from charrnn.core import files, paths
from charrnn.core.params import Params
from charrnn.core.stage import run_stage
from charrnn.data.split import read_documents
from charrnn.data.vocab import Vocabulary, count_utf8, read_utf8, vocab_metrics
from charrnn.nn import lineage


def main() -> None:
    params = Params.load(paths.PARAMS)
    with tracking.resolved_parent(paths.project_root(), params.train.init_from) as found:
        if found:
            lineage.train_params(params.train, found.model.config)  # a conflicting size fails before the counting
        counts = count_corpus()
    vocab = Vocabulary.from_counts(counts, params.vocab.min_count, params.vocab.max_size) if not found else \
        found.model.vocab.extended(counts, params.vocab.min_count, params.vocab.max_size)
    metrics = vocab_metrics(vocab, counts, read_documents(paths.CORPUS))
    if found:
        metrics["new_ids"] = vocab.size - found.model.vocab.size
    vocab.save(paths.VOCAB)
    files.write_json(paths.METRICS / "vocab.json", metrics)
    files.write_json(paths.PARENT, lineage.record(found.parent if found else None))
    print(f"vocabulary: {metrics['size']} ids ({metrics['distinct_chars']} distinct characters in the corpus, "
          f"[UNK] rate {metrics['unk_rate']:.4%}) -> {paths.VOCAB}")
    if found:
        print(f"fine-tuning from {found.parent.pinned}: its {found.model.vocab.size} ids kept, "
              f"{metrics['new_ids']} new -> {paths.PARENT}")


def count_corpus():
    total = paths.CORPUS.stat().st_size
    with tqdm(total=total, unit="B", unit_scale=True, desc="counting", leave=False, disable=None) as bar:
        def chunks():
            for chunk in read_utf8(paths.CORPUS):
                bar.update(len(chunk))
                yield chunk
        return count_utf8(chunks())


if __name__ == "__main__":
    run_stage(main)
