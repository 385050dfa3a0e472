"""DVC stage build_vocab: data/raw/corpus.txt -> data/vocab.json, metrics/vocab.json (which lists the
documents of a corpus of many, from data/raw/documents.json)."""
import _bootstrap  # noqa: F401  (project venv + this checkout's src; see stages/_bootstrap.py)
from tqdm import tqdm

from charrnn.core import files, paths
from charrnn.core.params import Params
from charrnn.core.stage import run_stage
from charrnn.data.split import read_documents
from charrnn.data.vocab import Vocabulary, count_chars, read_chunks, vocab_metrics


def main() -> None:
    params = Params.load(paths.PARAMS).vocab
    total = paths.CORPUS.stat().st_size
    with tqdm(total=total, unit="B", unit_scale=True, desc="counting", leave=False, disable=None) as bar:
        def chunks():
            for chunk in read_chunks(paths.CORPUS):
                bar.update(len(chunk.encode("utf-8")))
                yield chunk
        counts = count_chars(chunks())
    vocab = Vocabulary.from_counts(counts, params.min_count, params.max_size)
    metrics = vocab_metrics(vocab, counts, read_documents(paths.CORPUS))
    vocab.save(paths.VOCAB)
    files.write_json(paths.METRICS / "vocab.json", metrics)
    print(f"vocabulary: {metrics['size']} ids ({metrics['distinct_chars']} distinct characters in the corpus, "
          f"[UNK] rate {metrics['unk_rate']:.4%}) -> {paths.VOCAB}")


if __name__ == "__main__":
    run_stage(main)
