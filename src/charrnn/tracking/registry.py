"""The MLflow Model of a trained model, and its versions in the Model Registry.

With tracking.py (runs) the only module that imports mlflow. A trained model becomes, in the
run that trained it, an MLflow logged model of the pyfunc flavor (pyfunc_model.py) wrapping the
exported generator and its vocabulary, and a version of the registered model named by
tracking.registered_model, tagged with the DVC experiment, the model's and the corpus's content
hashes and the held-out bits per character. Each model (by content hash) is registered once.
As with runs, registering is best effort: a failing store warns and the pipeline goes on; and
nothing here is ever written to a DVC-tracked file.
"""
from __future__ import annotations

import importlib.metadata
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from charrnn.core import files
from charrnn.core.errors import CharrnnError
from charrnn.core.params import MODEL_URI
from charrnn.core.redact import redact
from charrnn.tracking import runs as tracking
from charrnn.tracking.provenance import CORPUS_TAG

LOGGED_MODEL_NAME = "generator"
PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")
PACKAGE = Path(__file__).resolve().parent.parent  # src/charrnn: the code a logged model carries
EXAMPLE_PROMPTS = ["\n"]
HELD_OUT_BPC_TAG = "charrnn.held_out_bpc"
NOT_EVALUATED = "not evaluated yet"


class RegistryError(CharrnnError):
    pass


def signature_defaults(sample) -> dict:
    """The pyfunc model's params and their defaults: the run's own sample.* settings."""
    from charrnn.sampling.settings import SamplingSettings

    return SamplingSettings.from_params(sample).as_dict()


def register(run: tracking.Run, name: str, generator_dir: Path, vocab_path: Path, model_hash: str,
             tags: dict[str, str], defaults: dict) -> str | None:
    """Log the pyfunc model into `run` and make it a version of the registered model `name`,
    unless a version of this model (by hash) exists already: then only the tags it lacks are
    added, and its held-out bits per character updated.
    The version number, or None when tracking is off or failed (a warning says which)."""
    def action(client) -> str:
        tags_now = {**tags, tracking.MODEL_HASH_TAG: model_hash}
        existing = version_of(client, model_hash, name)
        if existing is not None:  # keep where it came from (a later sample-only experiment did not train it)
            fresh = {k: v for k, v in tags_now.items() if k not in existing.tags or k == HELD_OUT_BPC_TAG}
            _set_version_tags(client, name, existing.version, fresh)
            _describe(client, name, existing.version, {**existing.tags, **fresh})
            return str(existing.version)
        logged = _log_model(client, run.run_id, generator_dir, vocab_path, defaults)
        _ensure_registered_model(client, name)
        # the source is the logged model's location, not models:/<id>: MLflow's registry resolves
        # the latter through the process-wide tracking URI, not this client's
        version = client.create_model_version(name, source=logged.artifact_location, run_id=run.run_id,
                                              tags={k: redact(v) for k, v in tags_now.items()},
                                              model_id=logged.model_id, description=description(tags_now))
        return str(version.version)

    return run.call("registering the model", action)


def tag_version(run: tracking.Run, name: str, model_hash: str, tags: dict[str, str]) -> None:
    """Set tags on the registered version of this model, if there is one."""
    def action(client) -> None:
        existing = version_of(client, model_hash, name)
        if existing is not None:
            _set_version_tags(client, name, existing.version, tags)
            _describe(client, name, existing.version, {**existing.tags, **tags})

    run.call("tagging the model version", action)


def description(tags: dict[str, str]) -> str:
    """A version's description, from its tags: what the registry's versions table shows of a
    version (its tags column cuts them off), the number first, e.g. `2.1288 bpc · shakespeare
    3f2a9c1b · lr-001`. bpc compares only between versions of one corpus."""
    parts = [f"{tags[HELD_OUT_BPC_TAG]} bpc" if HELD_OUT_BPC_TAG in tags else NOT_EVALUATED]
    if CORPUS_TAG in tags:
        parts.append(tags[CORPUS_TAG])
    if tags.get("charrnn.dvc_exp_name"):
        parts.append(tags["charrnn.dvc_exp_name"])
    return redact(" · ".join(parts))


def _describe(client, name: str, version: str, tags: dict[str, str]) -> None:
    """Rewrite the description charrnn wrote from the version's tags (a user's own is kept)."""
    current = client.get_model_version(name, version).description or ""
    if current and not re.match(rf"([0-9.]+ bpc|{NOT_EVALUATED})( · |$)", current):
        return
    if current != description(tags):
        client.update_model_version(name, version, description=description(tags))


def _set_version_tags(client, name: str, version: str, tags: dict[str, str]) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, redact(value))


def version_of(client, model_hash: str, name: str | None = None):
    """The newest registered version of the model with this content hash (of the registered
    model `name`, or of any), or None."""
    from mlflow.exceptions import MlflowException

    by_hash = f"tags.`{tracking.MODEL_HASH_TAG}` = '{model_hash}'"
    try:
        versions = client.search_model_versions(by_hash if name is None else f"name = '{_quoted(name)}' and {by_hash}")
    except MlflowException:
        return None  # no registered model of that name yet
    return max(versions, key=lambda v: int(v.version)) if versions else None


def _quoted(name: str) -> str:
    return name.replace("'", "\\'")


def _ensure_registered_model(client, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="charrnn generators: a list of prompts in, "
                                                          "each prompt with its generated text out")


def _requirements() -> list[str]:
    """What the pyfunc model needs to load: the TensorFlow and MLflow of this environment."""
    found = []
    for names in (("tensorflow-cpu", "tensorflow"), ("mlflow",)):
        for dist in names:
            try:
                found.append(f"{dist}=={importlib.metadata.version(dist)}")
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return found


def _log_model(client, run_id: str, generator_dir: Path, vocab_path: Path, defaults: dict):
    """The pyfunc model as a logged model of the run (MLflow 3), READY."""
    import mlflow
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus
    from mlflow.models import Model, infer_signature

    experiment_id = client.get_run(run_id).info.experiment_id
    logged = client.create_logged_model(experiment_id, name=LOGGED_MODEL_NAME, source_run_id=run_id,
                                        model_type="charrnn-generator")
    try:
        client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
        signature = infer_signature(EXAMPLE_PROMPTS, ["\n" + "generated text"], params=defaults)
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / "model"
            code = Path(tmp) / "code" / "charrnn"
            shutil.copytree(PACKAGE, code, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            mlflow.pyfunc.save_model(
                str(local), python_model=str(PYFUNC_CODE), code_paths=[str(code)],
                artifacts={"generator": str(generator_dir), "vocab": str(vocab_path)},
                signature=signature, input_example=(EXAMPLE_PROMPTS, defaults), model_config=defaults,
                pip_requirements=_requirements(),
                mlflow_model=Model(artifact_path=logged.artifact_location, model_uuid=logged.model_id,
                                   run_id=run_id, model_id=logged.model_id))
            client.log_model_artifacts(logged.model_id, str(local))
    except BaseException:
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
        raise
    client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    return logged


# --- reading the registry (charrnn promote, charrnn serve) ---------------------------------------


@dataclass(frozen=True)
class Version:
    name: str
    version: str
    run_id: str | None
    source: str
    tags: dict
    aliases: list


def _read_client(root: Path):
    found = tracking.read_client(root)
    if found is None:
        raise RegistryError(f"no MLflow store at {redact(tracking.tracking_uri(root))} yet: run the pipeline first "
                            "(`dvc repro`)")
    return found


def find_version(root: Path, name: str, target: str) -> Version:
    """The version of registered model `name` that `target` names: a version number, a run id, or a
    DVC experiment (or run) name (its newest version)."""
    from mlflow.exceptions import MlflowException

    client = _read_client(root)
    try:
        if target.isascii() and target.isdigit():  # str.isdigit alone takes '１' (full-width) for 1
            found = [client.get_model_version(name, target)]
        else:
            versions = client.search_model_versions(f"name = '{_quoted(name)}'")
            found = [v for v in versions if v.run_id == target or v.tags.get("charrnn.dvc_exp_name") == target]
            if not found:
                runs = {v.run_id for v in versions if v.run_id}
                named = {r for r in runs if client.get_run(r).info.run_name == target}
                found = [v for v in versions if v.run_id in named]
    except MlflowException as e:
        raise RegistryError(f"registered model {name!r}: {redact(e.message)}") from None
    if not found:
        raise RegistryError(f"no version of the registered model {name!r} comes from {target!r}: give a version "
                            "number, a run id, or the name of a DVC experiment that trained a model "
                            "(`charrnn runs` lists them)")
    return _version(max(found, key=lambda v: int(v.version)))


def _version(v) -> Version:
    return Version(v.name, str(v.version), v.run_id, v.source, dict(v.tags), list(getattr(v, "aliases", []) or []))


def promote(root: Path, name: str, target: str, alias: str) -> Version:
    """Point `alias` (e.g. champion) at the version `target` names; models:/name@alias then loads it."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]{0,254}", alias) or re.fullmatch(r"v[0-9]+|latest", alias, re.I):
        raise RegistryError(f"alias {alias!r} is not usable: letters, digits, '_' and '-', not starting with a "
                            "digit, and not 'latest' or v<number>")
    version = find_version(root, name, target)
    try:
        _read_client(root).set_registered_model_alias(name, alias, version.version)
    except Exception as e:  # MLflow wraps the store's own errors (sqlite, permissions, a server) in several types
        raise tracking.write_error(root, f"setting the alias {alias!r}", e) from None
    return version


def resolve(root: Path, uri: str, dest: Path) -> tuple[Path, Version]:
    """Download the MLflow Model of `models:/name@alias` or `models:/name/version` into dest: the
    directory of its artifacts (generator/, vocab.json) and the version it is. The version's own
    location is downloaded, not models:/...: MLflow would look that up in the process-wide
    registry, not in this project's store."""
    import mlflow
    from mlflow.exceptions import MlflowException

    parsed = _parsed(uri)
    client = _read_client(root)
    try:
        v = _named_version(client, parsed)
        local = mlflow.artifacts.download_artifacts(artifact_uri=v.source, dst_path=str(dest),
                                                    tracking_uri=tracking.tracking_uri(root))
    except MlflowException as e:
        raise RegistryError(f"{uri}: {redact(e.message)} (store: {redact(tracking.tracking_uri(root))})") from None
    return Path(local), _version(v)


def _parsed(uri: str) -> tuple[str, str | None, str | None]:
    """(name, alias, version number) of `models:/name@alias` or `models:/name/version`."""
    match = re.fullmatch(MODEL_URI, uri)
    if not match:
        raise RegistryError(f"{uri!r} is not a registered model URI: use models:/<name>@<alias> or models:/<name>/<version>")
    return match.groups()


def _named_version(client, parsed: tuple[str, str | None, str | None]):
    """The model version a parsed URI names (MlflowException if none)."""
    name, alias, number = parsed
    return client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, number)


def training_model(root: Path, uri: str, dest: Path) -> tuple[Path, Version]:
    """The model directory (config.json, model.weights.h5, vocab.json) of the version `uri` names:
    the `model` artifact of the run that trained it, downloaded into dest, checked against the
    version's model-hash tag. For fine-tuning (train.init_from)."""
    from mlflow.exceptions import MlflowException

    parsed = _parsed(uri)
    client = _read_client(root)
    try:
        v = _named_version(client, parsed)
    except MlflowException as e:
        raise RegistryError(f"{uri}: {redact(e.message)} (store: {redact(tracking.tracking_uri(root))})") from None
    where = f"{uri} (version {v.version} of {v.name!r})"
    expected = v.tags.get(tracking.MODEL_HASH_TAG)
    if not v.run_id or not expected:
        raise RegistryError(f"{where} is not a charrnn model: it has no training run or no {tracking.MODEL_HASH_TAG} tag")
    try:
        local = Path(client.download_artifacts(v.run_id, "model", str(dest)))
    except Exception as e:  # noqa: BLE001 - MLflow and the artifact store raise their own types for a missing artifact
        raise RegistryError(f"{where}: the model/ artifact of its run {v.run_id} cannot be downloaded "
                            f"({type(e).__name__}: {redact(str(e))[:200]})") from None
    found = files.sha256_tree(local)
    if found != expected:
        raise RegistryError(f"{where}: the model/ artifact of its run is not the registered model (its hash is "
                            f"{found[:12]}, the version's {tracking.MODEL_HASH_TAG} tag says "
                            f"{expected[:12]}): it is damaged; register the model again or fine-tune another version")
    return local, _version(v)


@dataclass(frozen=True)
class Fetched:
    """A registered model's files, downloaded: the exported generator, its vocabulary, and the
    sampling defaults it was logged with."""

    generator: Path
    vocab: Path
    defaults: dict
    version: Version


def fetch(root: Path, uri: str, dest: Path) -> Fetched:
    """Download a registered model (see `resolve`) and read its MLmodel file with MLflow's own
    reader; a damaged or foreign model is a RegistryError naming the version and its place."""
    from mlflow.models import Model

    local, version = resolve(root, uri, dest)
    where = f"{uri} (version {version.version}, stored at {redact(version.source)})"
    repair = ("register the model again (`dvc repro -f sample` in the project that trained it), or promote "
              "another version with `charrnn promote`")
    try:
        flavor = Model.load(str(local / "MLmodel")).flavors.get("python_function")
    except Exception as e:  # noqa: BLE001 - MLflow raises YAML, type and key errors for a damaged file
        raise RegistryError(f"{where}: its MLmodel file cannot be read ({type(e).__name__}); {repair}") from None
    artifacts = flavor.get("artifacts") if isinstance(flavor, dict) else None
    if not isinstance(artifacts, dict) or not all(isinstance(artifacts.get(k), dict) and "path" in artifacts[k]
                                                  for k in ("generator", "vocab")):
        raise RegistryError(f"{where} is not a charrnn generator (its MLmodel has no python_function flavor with "
                            f"the artifacts generator and vocab); {repair}")
    files = {k: local / str(artifacts[k]["path"]) for k in ("generator", "vocab")}
    for name, path in files.items():
        if not path.exists() or not path.resolve().is_relative_to(local.resolve()):
            raise RegistryError(f"{where}: its {name} artifact is missing; {repair}")
    config = flavor.get("config") if isinstance(flavor.get("config"), dict) else {}
    return Fetched(files["generator"], files["vocab"], config, version)
