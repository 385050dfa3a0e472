"""Where the pipeline's files live, relative to the project root (dvc.yaml names the same), and
where that root is."""
from pathlib import Path

from charrnn.core.errors import CharrnnError

PARAMS = Path("params.yaml")
LOCK = Path("dvc.lock")
CORPUS = Path("data/raw/corpus.txt")
DOCUMENTS = CORPUS.with_name("documents.json")  # where each document of the corpus is in it (download)
DOWNLOAD_CACHE = Path("data/cache")
VOCAB = Path("data/vocab.json")
PARENT = Path("data/parent.json")  # the parent model a fine-tuning starts from, as build_vocab resolved it
RECORDS = Path("data/records")
MODEL = Path("data/model")
SAMPLES = Path("data/samples")
GENERATOR = Path("data/generator")
METRICS = Path("metrics")
HELD_OUT = METRICS / "perplexity.json"
SAMPLE_METRICS = METRICS / "samples.json"
# beside each metrics file, what is not a number: which model it belongs to, the longest copied text
EVALUATION = Path("data/evaluation.json")
SAMPLING = Path("data/sampling.json")
TRAIN_BACKUP = Path("data/cache/train-backup")  # resumable training state; not a DVC output
MLRUNS = Path("mlruns")
# what running the pipeline changes in the working tree (provenance leaves these out)
PIPELINE_OUTPUTS = (LOCK, Path("data"), METRICS, MLRUNS)


class ProjectError(CharrnnError):
    pass


def project_root(start: Path | None = None) -> Path:
    """The nearest directory at or above `start` (default: the cwd) holding dvc.yaml."""
    start = Path(start or Path.cwd()).resolve()
    for directory in (start, *start.parents):
        if (directory / "dvc.yaml").is_file():
            return directory
    raise ProjectError(f"not inside a charrnn project: no dvc.yaml in {start} or any directory above it "
                       "(run this in the project's directory)")
