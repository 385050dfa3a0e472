"""Where the pipeline's files live, relative to the project root (dvc.yaml names the same)."""
from pathlib import Path

PARAMS = Path("params.yaml")
CORPUS = Path("data/raw/corpus.txt")
DOWNLOAD_CACHE = Path("data/cache")
VOCAB = Path("data/vocab.json")
RECORDS = Path("data/records")
MODEL = Path("data/model")
SAMPLES = Path("data/samples")
GENERATOR = Path("data/generator")
METRICS = Path("metrics")
TRAIN_BACKUP = Path("data/cache/train-backup")  # resumable training state; not a DVC output
