"""The MLflow UI (the installed MLflow's own `mlflow server`) over a store filled by charrnn's
tracking code, in Debian's chromium: the experiment opens, from the link `charrnn runs` prints, as a training
experiment whose runs list shows the held-out bits per character without a click, and the
registry's versions table shows each version's bpc and corpus. Screenshots go to
$CHARRNN_SCREENSHOTS (else tmp_path): docs/mlflow-runs.png and docs/mlflow-versions.png are these."""
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from charrnn.core.params import Params
from charrnn.tracking import publishing, registry, ui
from charrnn.tracking import runs as tracking
from docs.screenshot import CHROMIUM, CHROMIUM_ARGS
from tests.conftest import unavailable
from tests.kit import exported as export_tiny
from tests.kit import saved_model
from tests.servers import free_port, stop_group

pytestmark = pytest.mark.slow
VIEWPORT = {"width": 1400, "height": 900}
CORPORA = {"shakespeare": "ROMEO: hi\n", "corpora/chinese.txt": "\u4e00\u4e8c\u4e09\n"}


@pytest.fixture(scope="module", autouse=True)
def chromium_is_there():
    if not CHROMIUM.exists():
        unavailable("Debian's chromium is not installed (/usr/bin/chromium; `apt-get install chromium`, as .ci/run does)")


@pytest.fixture(scope="module")
def project(tmp_path_factory, empty_store):
    """A project whose store holds three evaluated runs of two corpora, each model registered."""
    root = tmp_path_factory.mktemp("project")
    (root / "dvc.yaml").write_text("stages: {}\n")
    (root / "mlruns").mkdir()
    (root / "mlruns" / "mlflow.db").write_bytes(empty_store.read_bytes())
    saved_model(root / "tiny" / "model")
    export_tiny(root / "tiny" / "generator")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHARRNN_TRACKING", "1")
        for name in ("MLFLOW_TRACKING_URI", "DVC_ROOT"):
            mp.delenv(name, raising=False)
        mp.chdir(root)
        for i, (source, units, bpc) in enumerate([("shakespeare", 256, 2.1288), ("shakespeare", 512, 2.0113),
                                                   ("corpora/chinese.txt", 512, 5.4021)]):
            (root / "data" / "raw").mkdir(parents=True, exist_ok=True)
            (root / "data" / "raw" / "corpus.txt").write_text(CORPORA[source])
            mp.setenv("DVC_EXP_NAME", f"run-{i + 1}")
            params = Params.from_dict({"data": {"source": source}, "train": {"units": units}})
            with tracking.train_run(params, root) as run:
                for epoch in (1, 2, 3):
                    run.log_metrics({"loss": bpc + 1 / epoch, "val_loss": bpc + 1.2 / epoch}, step=epoch)
                run.log_metrics({"held_out_bpc": bpc, "held_out_loss": bpc * 0.6931, "copied_frac_20": 0.01})
                model_hash = f"{i}" * 64
                run.set_tags({tracking.MODEL_HASH_TAG: model_hash})
                tags = {registry.HELD_OUT_BPC_TAG: f"{bpc:.4f}", **publishing.provenance.dvc_tags(),
                        **publishing.provenance.corpus_tags(root, params)}
                registry.register(run, "charrnn", root / "tiny" / "generator", root / "tiny" / "model" / "vocab.json",
                                  model_hash, tags, registry.signature_defaults(params.sample))
    return root


@pytest.fixture(scope="module")
def server(project):
    """`mlflow server` (one worker, no job runner) on 127.0.0.1 over the project's store: its URL.
    Its whole process group is stopped afterwards (the server starts workers of its own)."""
    port = free_port()
    log = (project / "server.log").open("w")
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "server", "--backend-store-uri",
         f"sqlite:///{project}/mlruns/mlflow.db", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
             "TMPDIR": str(project / "mlruns")},  # MLflow leaves a lock file per database URL there
        stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"mlflow server did not start: {(project / 'server.log').read_text()[-2000:]}")
                time.sleep(0.5)
        yield url
    finally:
        stop_group(process)
        log.close()


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser.new_page(viewport=VIEWPORT, device_scale_factor=1)
        browser.close()


def screenshots(tmp_path) -> Path:
    where = Path(os.environ.get("CHARRNN_SCREENSHOTS") or tmp_path)
    where.mkdir(parents=True, exist_ok=True)
    return where


def printed_link(project, server) -> str:
    """The link `charrnn runs` prints (on stderr) for the experiment, its store reached through the server."""
    env = {k: v for k, v in os.environ.items() if k != "DVC_ROOT"} | {"MLFLOW_TRACKING_URI": server}
    done = subprocess.run([str(Path(sys.executable).with_name("charrnn")), "runs"], cwd=project, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    links = [line.split(": ", 1)[1] for line in done.stderr.splitlines() if line.startswith("in the MLflow UI")]
    experiment = tracking.client(server).get_experiment_by_name("charrnn").experiment_id
    assert links == [ui.runs_url(server, experiment)], done.stderr
    return links[0]


def column(page, key: str):
    """The runs grid's cells (header excluded) of the column with this key, e.g. metrics.`held_out_bpc`."""
    return page.locator(f'[role="gridcell"][col-id="{key}"]')


def test_the_runs_list_shows_held_out_bpc_and_the_corpus_without_a_click(page, server, project, tmp_path):
    page.goto(printed_link(project, server))
    bpc = column(page, "metrics.`held_out_bpc`")
    bpc.nth(2).wait_for(timeout=60_000)
    # best held-out bpc first (the UI sorts all runs together: the corpus column tells them apart)
    assert [float(t) for t in bpc.all_inner_texts()] == pytest.approx([2.0113, 2.1288, 5.4021], abs=1e-3)
    assert bpc.first.is_visible()
    names = column(page, "run_name").all_inner_texts() or page.locator('[role="gridcell"] a').all_inner_texts()
    assert [n.strip() for n in names if n.strip().startswith("run-")][:3] == ["run-2", "run-1", "run-3"]
    assert "workflowType=machine_learning" in page.url and "Model training" in page.inner_text("body")
    close_assistant(page)  # the UI opens its assistant's panel on a first visit: more room for the grid
    corpora = column(page, "tags.`charrnn.corpus`")
    corpora.nth(2).wait_for(timeout=10_000)
    assert [t.split()[0] for t in corpora.all_inner_texts()] == ["shakespeare", "shakespeare", "chinese.txt"]
    page.screenshot(path=str(screenshots(tmp_path) / "mlflow-runs.png"))


def close_assistant(page) -> None:
    close = page.locator('button[aria-label="Close"], button:has(svg[aria-label="Close"])').last
    if close.count():
        close.click()
        page.wait_for_timeout(500)


def test_the_registry_versions_table_shows_each_versions_bpc_and_corpus(page, server, tmp_path):
    page.goto(f"{server}/#/models/charrnn")
    page.get_by_text("Version 3").first.wait_for(timeout=60_000)
    close_assistant(page)
    for description in ("2.1288 bpc · shakespeare", "2.0113 bpc · shakespeare", "5.4021 bpc · chinese.txt"):
        assert page.get_by_text(description).first.is_visible(), description
    page.screenshot(path=str(screenshots(tmp_path) / "mlflow-versions.png"))
