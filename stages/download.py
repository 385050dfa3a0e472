"""DVC stage download: data.source -> data/raw/corpus.txt (UTF-8, \\n newlines, no BOM) and
data/raw/documents.json (the documents in it: names, sizes, hashes, where each one is)."""
import _bootstrap  # noqa: F401  (project venv + this checkout's src; see stages/_bootstrap.py)
import sys
from pathlib import Path

from charrnn.core import files, paths
from charrnn.core.params import Params
from charrnn.core.stage import run_stage
from charrnn.data import corpus


def main() -> None:
    params = Params.load(paths.PARAMS)
    warning = corpus.credentials_warning(params.data.source)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    local = corpus.local_source_problem(params.data.source, Path.cwd())  # stages run in the project root
    if local is not None and local[0] == "error":
        raise corpus.CorpusError(local[1])
    if local is not None:
        print(f"warning: {local[1]}", file=sys.stderr)
    info = corpus.fetch(params.data, paths.CORPUS, paths.DOWNLOAD_CACHE)
    files.write_json(paths.DOCUMENTS, corpus.documents_file(info))
    print(f"{paths.CORPUS}: {info['chars']:,} characters ({info['bytes']:,} bytes) "
          f"from {info['kind']} {info['source']} (sha256 {info['sha256'][:12]})"
          + (f", {len(info['documents']):,} documents" if "documents" in info else ""))


if __name__ == "__main__":
    run_stage(main)
