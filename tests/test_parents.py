"""charrnn.tracking.parents: a fine-tuning's parent from a model directory or a registered version
(the model/ artifact of the run that trained it, checked against the version's model-hash tag)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from charrnn.core import files
from charrnn.nn.lineage import ParentError
from charrnn.tracking import parents, registry
from charrnn.tracking import runs as tracking
from tests.kit import saved_model


@pytest.fixture
def root(tmp_path, monkeypatch, empty_store) -> Path:
    """A project root with a store holding one registered model, `base`, whose version 1 is a
    tiny model logged as its run's model/ artifact and version 2 a run without one."""
    for name in ("DVC_ROOT", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "mlruns").mkdir()
    shutil.copy(empty_store, tmp_path / "mlruns" / "mlflow.db")
    model = saved_model(tmp_path / "parent")
    client = tracking.client(tracking.tracking_uri(tmp_path))
    experiment = client.create_experiment("charrnn", artifact_location=(tmp_path / "mlruns/artifacts").as_uri())
    client.create_registered_model("base")
    with_model = client.create_run(experiment).info.run_id
    client.log_artifacts(with_model, str(model), "model")
    without = client.create_run(experiment).info.run_id
    for run_id in (with_model, without):
        client.create_model_version("base", source=str(model), run_id=run_id,
                                    tags={tracking.MODEL_HASH_TAG: files.sha256_tree(model)})
    client.set_registered_model_alias("base", "champion", "1")
    client.set_registered_model_alias("base", "empty", "2")
    return tmp_path


def test_a_registered_parent_is_its_training_runs_model(root):
    with parents.resolved(root, "models:/base@champion") as found:
        assert found.parent.version == "1" and found.parent.registered_model == "base"
        assert found.parent.model_hash == files.sha256_tree(root / "parent")
        assert found.model.vocab == registry_vocab(root)
        downloaded = found.model.path
    assert not downloaded.exists()  # the download goes with the block


def registry_vocab(root: Path):
    from charrnn.nn import modeldir

    return modeldir.read(root / "parent").vocab


def test_a_directory_parent_is_read_in_place(root):
    with parents.resolved(root, str(root / "parent")) as found:
        assert found.parent.model_hash == files.sha256_tree(root / "parent") and found.parent.version is None
    with parents.resolved(root, "") as found:
        assert found is None


def test_a_version_whose_artifact_is_not_the_registered_model_is_refused(root):
    model_dir = next((root / "mlruns/artifacts").rglob("model.weights.h5")).parent
    (model_dir / "vocab.json").write_text((model_dir / "vocab.json").read_text() + " ")
    with pytest.raises(registry.RegistryError, match=r"not the registered model .*it is damaged"):
        with parents.resolved(root, "models:/base/1"):
            pass


def test_a_version_without_a_model_artifact_is_refused(root):
    with pytest.raises(registry.RegistryError, match=r"models:/base@empty \(version 2 of 'base'\): the model/ artifact"):
        with parents.resolved(root, "models:/base@empty"):
            pass


def test_a_directory_that_is_not_a_model_is_refused(root):
    (root / "parent" / "model.weights.h5").unlink(missing_ok=True)
    with pytest.raises(ParentError, match=r"train\.init_from '.*parent': .*model\.weights\.h5 is missing"):
        with parents.resolved(root, str(root / "parent")):
            pass
