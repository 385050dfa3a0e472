"""Where the pipeline's files live, relative to the project root (dvc.yaml names the same)."""
from pathlib import Path

PARAMS = Path("params.yaml")
LOCK = Path("dvc.lock")
CORPUS = Path("data/raw/corpus.txt")
DOWNLOAD_CACHE = Path("data/cache")
VOCAB = Path("data/vocab.json")
RECORDS = Path("data/records")
MODEL = Path("data/model")
SAMPLES = Path("data/samples")
GENERATOR = Path("data/generator")
METRICS = Path("metrics")
HELD_OUT = METRICS / "perplexity.json"
SAMPLE_METRICS = METRICS / "samples.json"
TRAIN_BACKUP = Path("data/cache/train-backup")  # resumable training state; not a DVC output
MLRUNS = Path("mlruns")
# what running the pipeline changes in the working tree (provenance leaves these out)
PIPELINE_OUTPUTS = (LOCK, Path("data"), METRICS, MLRUNS)
