"""Finding the parent model of a fine-tuning (train.init_from): a model directory, or the model a
registered version was trained as (its run's `model/` artifact), each checked as any model
directory is (charrnn.nn.modeldir) before anything is built from it."""
from __future__ import annotations

import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, NamedTuple

from charrnn.core import files
from charrnn.nn import modeldir
from charrnn.nn.lineage import Parent, ParentError
from charrnn.tracking import lookup, registry


class Found(NamedTuple):
    model: modeldir.ModelDir  # its path lasts as long as the `resolved` block
    parent: Parent


@contextmanager
def resolved(root: Path, init_from: str) -> Iterator[Found | None]:
    """The parent `init_from` names (None for ""), downloaded into a temporary directory for a
    models:/ URI; a parent that is missing, damaged or unknown is a one-line error."""
    if not init_from:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="charrnn-parent-") as tmp:
        if init_from.startswith("models:"):
            local, version = registry.training_model(root, init_from, Path(tmp))
            parent = Parent(init_from, files.sha256_tree(local), version.name, version.version)
        else:
            local, parent = Path(init_from), None
        try:
            model = modeldir.read(local)
        except modeldir.ModelError as e:
            raise ParentError(f"train.init_from {init_from!r}: {e}") from None
        yield Found(model, parent or Parent(init_from, files.sha256_tree(local)))


def tags(root: Path, parent: Parent) -> dict[str, str]:
    """The lineage a fine-tuned model's run is tagged with: the parent's content hash, what
    init_from said, and the parent's registered version and training run (looked up by its hash
    when init_from named a directory; left out when the store does not know it)."""
    found = {"charrnn.init_from": parent.init_from, "charrnn.parent_model_hash": parent.model_hash}
    record = lookup.model_record(root, parent.model_hash)
    card = record["card"] if record else {}
    name, version = (parent.registered_model, parent.version) if parent.version else \
        (card.get("registered_model"), card.get("version"))
    if version:
        found["charrnn.parent_version"] = f"models:/{name}/{version}"
    if card.get("run_id"):
        found["charrnn.parent_run_id"] = card["run_id"]
    return found
