"""charrnn serve: the API against the library, bad input, the batcher, the model card, and (slow)
a real server process under a bounded load. The guard, timeouts and limits: test_serve_guard.py;
the OpenAI-compatible API: test_serve_openai.py."""
import asyncio
import json
import logging
import socket
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import tensorflow as tf

from charrnn.core import metricfiles
from charrnn.core.params import Params
from charrnn.nn import network
from charrnn.sampling import generation
from charrnn.sampling.settings import SamplingSettings
from charrnn.serve import app as serve_app
from charrnn.serve import batching, server
from charrnn.serve import served as served_lib
from charrnn.serve.options import ServeError, ServeOptions
from charrnn.tracking import registry
from charrnn.tracking import runs as tracking
from tests.kit import SERVE_VOCAB as VOCAB
from tests.kit import saved_model

with warnings.catch_warnings():  # Starlette prefers httpx2 for its TestClient; httpx is what we have
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

SECRET_SOURCE = "https://reader:hunter2@example.com/corpus.txt?token=abc123"
JSON = {"content-type": "application/json"}


def save_tiny_model(path: Path, seed: int = 0) -> Path:
    return saved_model(path, VOCAB, units=32, layers=2, seed=seed)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("serving") / "model")


@pytest.fixture(scope="module")
def served(model_dir):
    return served_lib.load(str(model_dir))


@pytest.fixture(scope="module")
def generator(served):
    return served.engine  # the Engine the service runs, over the library's Generator


@pytest.fixture(scope="module")
def client(served):
    with TestClient(serve_app.create_app(served, ServeOptions(max_chars=2_000, max_prompts=8, chunk=7)), base_url="http://localhost") as c:
        yield c


DEFAULTS = SamplingSettings(num_chars=500)  # the sample params' defaults: no run knows this model's


def expected(engine, prompts, num_chars=DEFAULTS.num_chars, temperature=DEFAULTS.temperature, seed=DEFAULTS.seed,
             top_k=DEFAULTS.top_k, top_p=DEFAULTS.top_p):
    return engine.generate_text(prompts, SamplingSettings(num_chars, temperature, top_k, top_p, seed), VOCAB)


def events(text: str) -> list[tuple[str, dict]]:
    """(event name, data) of each server-sent event."""
    out = []
    for block in text.strip().split("\n\n"):
        name, data = "message", None
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[len("event: "):]
            elif line.startswith("data: "):
                data = json.loads(line[len("data: "):])
        out.append((name, data))
    return out


def joined(stream_events: list[tuple[str, dict]]) -> list[str]:
    texts: dict[int, str] = {}
    for name, data in stream_events:
        if name == "message":
            texts[data["index"]] = texts.get(data["index"], "") + data["text"]
    return [texts[i] for i in sorted(texts)]


# --- answers ------------------------------------------------------------------------------------


@pytest.mark.parametrize("given", [
    {},
    {"num_chars": 61, "temperature": 1.3, "seed": 11},
    {"num_chars": 40, "temperature": 0.5, "seed": 3, "top_k": 4},
    {"num_chars": 33, "temperature": 1, "seed": 2**31 - 1, "top_p": 0.8},
    {"num_chars": 1, "temperature": 1e-6, "seed": 0, "top_k": 2, "top_p": 0.5},
])
def test_an_answer_is_generate_text_of_the_same_request(client, generator, given):
    r = client.post("/v1/generate", json={"prompt": "ROMEO:", **given})
    assert r.status_code == 200, r.text
    body = r.json()
    wanted = expected(generator, ["ROMEO:"], **given)
    assert body["texts"] == wanted and len(wanted[0]) == len("ROMEO:") + given.get("num_chars", DEFAULTS.num_chars)
    assert body["model"] == client.app.state.served.name and body["warnings"] == []
    assert {k: body[k] for k in SamplingSettings.names()} == {**DEFAULTS.as_dict(), **given}


def test_several_prompts_are_the_rows_of_one_generate_text(client, generator):
    prompts = ["ROMEO:", "JULIET:", "a", "The "]
    r = client.post("/v1/generate", json={"prompts": prompts, "num_chars": 50, "seed": 9})
    assert r.json()["texts"] == expected(generator, prompts, 50, seed=9)


def test_the_savedmodel_gives_the_same_answer(client, generator, tmp_path):
    generation.export(generator.graphs, tmp_path / "generator")
    saved = tf.saved_model.load(str(tmp_path / "generator"))
    out = saved.generate(tf.constant(["ROMEO:", "a"]), tf.constant(45), tf.constant(0.9), tf.constant(3),
                         tf.constant(0.95), tf.constant(4, tf.int64))
    r = client.post("/v1/generate", json={"prompts": ["ROMEO:", "a"], "num_chars": 45, "temperature": 0.9,
                                          "seed": 4, "top_k": 3, "top_p": 0.95})
    assert r.json()["texts"] == [s.decode() for s in out.numpy()]


def test_a_stream_is_the_same_text_in_pieces(client, generator):
    prompts = ["ROMEO:", "JULIET:"]
    r = client.post("/v1/generate", json={"prompts": prompts, "num_chars": 30, "seed": 5, "stream": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    got = events(r.text)
    assert got[:2] == [("message", {"index": 0, "text": "ROMEO:"}), ("message", {"index": 1, "text": "JULIET:"})]
    assert joined(got) == expected(generator, prompts, 30, seed=5)
    pieces = [d["text"] for name, d in got[2:] if name == "message"]
    assert len(pieces) == 2 * 5 and all(len(p) <= 7 for p in pieces)  # 30 characters in chunks of 7
    name, done = got[-1]
    assert name == "done" and done["num_chars"] == 30 and done["seed"] == 5 and done["warnings"] == []


def test_characters_outside_the_vocabulary_are_a_warning_not_an_error(client, generator):
    r = client.post("/v1/generate", json={"prompt": "ROMEO€:", "num_chars": 20})
    assert r.status_code == 200
    assert r.json()["texts"] == expected(generator, ["ROMEO€:"], 20)
    assert "'€'" in r.json()["warnings"][0]


def test_health_card_stats_and_page(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    card = client.get("/v1/model").json()
    assert card["vocab_size"] == VOCAB.size
    assert card["architecture"].items() >= {"vocab_size": VOCAB.size, "embedding_dim": 8, "units": 32, "layers": 2,
                                            "cell": "gru", "dropout": 0.0}.items()
    assert "vocab_fingerprint" not in card["architecture"]
    assert card["sampling_defaults"] == DEFAULTS.as_dict()  # no run knows this model's sample params
    assert card["corpus"] is None and card["held_out"] is None and card["mlflow"] is None  # no store: unknown
    assert card["limits"]["max_chars"] == 2_000 and card["limits"]["max_prompts"] == 8
    stats = client.get("/v1/stats").json()
    assert stats["rows"] == 0 and stats["waiting"] == 0 and stats["chunk"] == 7
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for element in ('id="prompt"', 'id="temperature"', 'id="num_chars"', 'id="top_k"', 'id="top_p"', 'id="seed"',
                    'id="generate"', 'id="output"', 'id="error"', 'id="card"'):
        assert element in page.text
    for name, kind in (("playground.js", "text/javascript"), ("playground.css", "text/css"), ("icon.svg", "image/svg")):
        r = client.get(f"/static/{name}")
        assert r.status_code == 200 and r.headers["content-type"].startswith(kind)
    assert client.get("/favicon.ico").headers["content-type"].startswith("image/svg+xml")
    assert client.get("/static/secret.py").status_code == 404


def test_the_page_references_nothing_outside_the_server():
    import re

    web = Path(serve_app.__file__).parent / "web"
    html = (web / "index.html").read_text(encoding="utf-8")
    assert sorted(re.findall(r'(?:src|href)="([^"]*)"', html)) == ["/static/icon.svg", "/static/playground.css",
                                                                 "/static/playground.js"]
    for name in ("index.html", "playground.js", "playground.css"):
        text = (web / name).read_text(encoding="utf-8")
        assert "://" not in text and "//cdn" not in text and "@import" not in text and "url(" not in text, name
    assert "<script>" not in html and "<style>" not in html  # the CSP allows only the server's own files


# --- bad input ----------------------------------------------------------------------------------

BAD = [
    (b"{", 400, "not valid JSON"),
    (b'{"prompt": "ROMEO:",}', 400, "not valid JSON"),
    (b"\xff\xfe{}", 400, "not UTF-8"),
    (b'{"prompt": "caf\xe9"}', 400, "not UTF-8"),
    (b"[" * 100_000, 400, "nested too deeply"),
    (b"", 400, "not valid JSON"),
    (b"[]", 422, "JSON object"),
    (b'"ROMEO:"', 422, "JSON object"),
    ({}, 422, "give either"),
    ({"prompt": "a", "prompts": ["b"]}, 422, "not both"),
    ({"prompt": ""}, 422, "prompt: string should have at least 1 character"),
    ({"prompts": []}, 422, "prompts: list should have at least 1 item"),
    ({"prompts": ["a", ""]}, 422, "prompts.1: string should have at least 1 character"),
    ({"prompt": None}, 422, "give either"),
    ({"prompt": ["ROMEO:"]}, 422, 'prompt: input should be a valid string, got ["ROMEO:"]'),
    ({"prompts": "ROMEO:"}, 422, "prompts: input should be a valid list"),
    ({"prompts": [1, 2]}, 422, "prompts.0: input should be a valid string, got 1; prompts.1:"),
    ({"prompts": ["a"] * 9}, 422, "list should have at most 8 items after validation, not 9"),
    ({"prompt": "€€€"}, 422, "no character of the model's vocabulary"),
    (b'{"prompt": "\\ud800"}', 422, "unable to parse raw data as a unicode string"),
    ({"prompt": "a" * 10_001}, 422, "at most 10000 characters"),
    ({"prompt": "a", "num_chars": 0}, 422, "num_chars: input should be greater than or equal to 1, got 0"),
    ({"prompt": "a", "num_chars": -5}, 422, "num_chars"),
    ({"prompt": "a", "num_chars": 2_001}, 422, "less than or equal to 2000, got 2001 (the server's --max-chars)"),
    ({"prompt": "a", "num_chars": "ten"}, 422, 'got "ten"'),
    ({"prompt": "a", "num_chars": True}, 422, "num_chars: input should be a valid integer, got true"),
    ({"prompt": "a", "num_chars": 10.5}, 422, "got 10.5"),
    ({"prompt": "a", "num_chars": None}, 422, "got None"),
    ({"prompt": "a", "num_chars": {"n": 1}}, 422, 'got {"n": 1}'),
    (b'{"prompt": "a", "num_chars": 1e400}', 422, "got Infinity"),
    ({"prompt": "a", "num_chars": 10**30}, 422, "num_chars"),
    ({"prompt": "a", "temperature": 0}, 422, "temperature: input should be greater than or equal to 0.000001, got 0"),
    ({"prompt": "a", "temperature": -1.0}, 422, "temperature"),
    ({"prompt": "a", "temperature": "hot"}, 422, "temperature: input should be a valid number"),
    (b'{"prompt": "a", "temperature": NaN}', 422, "temperature: input should be a finite number"),
    (b'{"prompt": "a", "temperature": -1e400}', 422, "temperature: input should be a finite number"),
    ({"prompt": "a", "top_p": 0}, 422, "top_p: input should be greater than 0"),
    ({"prompt": "a", "top_p": 1.5}, 422, "top_p: input should be less than or equal to 1"),
    ({"prompt": "a", "top_p": 1e-40}, 422, "top_p must be 0 or of a size a 32-bit float holds"),  # 0 in float32
    ({"prompt": "a", "top_p": 1e-300}, 422, "top_p must be 0 or of a size a 32-bit float holds"),
    ({"prompt": "a", "top_k": -1}, 422, "top_k: input should be greater than or equal to 0"),
    ({"prompt": "a", "top_k": 2.5}, 422, "top_k: input should be a valid integer"),
    ({"prompt": "a", "seed": -1}, 422, "seed: input should be greater than or equal to 0"),
    ({"prompt": "a", "seed": 2**40}, 422, "seed"),
    ({"prompt": "a", "seed": [1]}, 422, "seed: input should be a valid integer"),
    ({"prompt": "a", "stream": "yes"}, 422, "stream: input should be a valid boolean"),
    ({"prompt": "a", "tempreature": 1.0}, 422, "unknown field 'tempreature' (did you mean 'temperature'?)"),
    ({"prompt": "a", "model": "other"}, 422, "unknown field 'model'"),
    ({"prompt": "a", "temperature": 0, "top_p": 2}, 422, "temperature: input should be greater than or equal to "
                                                          "0.000001, got 0; top_p: input should be less than or "
                                                          "equal to 1, got 2"),
]


@pytest.mark.parametrize("body,status,message", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_input_is_a_json_4xx_that_says_why(client, body, status, message):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = client.post("/v1/generate", content=content, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert message in r.json()["error"], r.json()["error"]
    assert "Traceback" not in r.text
    assert client.post("/v1/generate", json={"prompt": "a", "num_chars": 3}).status_code == 200  # still serving


def test_a_bad_streamed_request_is_a_plain_json_error_not_a_stream(client):
    r = client.post("/v1/generate", json={"prompt": "", "stream": True})
    assert r.status_code == 422 and r.headers["content-type"] == "application/json"
    assert "at least 1 character" in r.json()["error"]


@pytest.mark.parametrize("chunked", [False, True])
def test_a_body_over_1_mb_is_413(client, chunked):
    body = json.dumps({"prompt": "a" * ServeOptions().max_body_bytes}).encode()
    content = iter([body[i:i + 65_536] for i in range(0, len(body), 65_536)]) if chunked else body
    r = client.post("/v1/generate", content=content, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json() == {"error": "the body is larger than 1,000,000 bytes"}


def test_other_routes_and_methods_are_json_404_and_405(client):
    assert client.get("/v1/nothing").status_code == 404 and client.get("/v1/nothing").json() == {"error": "Not Found"}
    r = client.get("/v1/generate")
    assert r.status_code == 405 and r.json() == {"error": "Method Not Allowed"}
    assert client.get("/docs").status_code == 404  # Swagger UI loads from a CDN: not served


class Failing:
    """The real engine, whose next `armed` steps fail (with a message holding a credential), and
    every step of a batch that holds a row of seed `poison`: a request that passes every check and
    still breaks the graph."""

    def __init__(self, engine, poison: int | None = None):
        self.engine, self.armed, self.poison = engine, 0, poison

    def start(self, prompts):
        return self.engine.start(prompts)

    def step(self, rows, n):
        if self.armed or (self.poison is not None and (rows.seed == self.poison).any()):
            self.armed = max(0, self.armed - 1)
            raise RuntimeError("cannot reach https://user:hunter2@example.com/x?token=abc123")
        return self.engine.step(rows, n)


def error_id(message: str) -> str:
    import re

    found = re.fullmatch(r"internal error \(id ([0-9a-f]{12}): the server's log has the details\)", message)
    assert found, message
    return found.group(1)


def test_a_failure_in_generation_is_a_500_with_an_id_logged_and_the_server_goes_on(served, generator, caplog):
    engine = Failing(generator)
    broken = served_lib.Served(served.name, engine, served.vocab, served.defaults, served.card)
    with caplog.at_level(logging.ERROR, logger="charrnn.serve"), \
            TestClient(serve_app.create_app(broken), base_url="http://localhost") as c:
        engine.armed = 2  # the batched step, then its retry alone
        r = c.post("/v1/generate", json={"prompt": "ROMEO:", "num_chars": 20})
        assert r.status_code == 500 and r.headers["content-type"] == "application/json"
        first = error_id(r.json()["error"])  # no graph text, no path, no credential in the answer
        engine.armed = 2
        r = c.post("/v1/generate", json={"prompt": "ROMEO:", "num_chars": 20, "stream": True})
        assert r.status_code == 200  # the stream had started: the failure is its last event
        name, data = events(r.text)[-1]
        assert name == "error" and error_id(data["error"]) != first
        r = c.post("/v1/generate", json={"prompt": "ROMEO:", "num_chars": 20})
        assert r.status_code == 200 and r.json()["texts"] == expected(generator, ["ROMEO:"], 20)
        engine.armed = 1  # a failure of the batch that its retry does not repeat: nobody's answer fails
        r = c.post("/v1/generate", json={"prompt": "ROMEO:", "num_chars": 20})
        assert r.status_code == 200 and r.json()["texts"] == expected(generator, ["ROMEO:"], 20)
    logged = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert f"[error id {first}]" in logged and "RuntimeError" in logged and "Traceback" in logged
    assert "https://***@example.com" in logged and "hunter2" not in logged and "abc123" not in logged


def test_a_request_that_breaks_the_graph_fails_alone_and_the_batch_goes_on(served, generator):
    """One poisoned request (seed 666: it passes every check, then fails inside the step) mixed into
    a running batch of good ones: it gets its 500, the others get the texts they get alone."""
    engine = Failing(generator, poison=666)
    batcher = batching.Batcher(engine, chunk=5)
    good = [(["ROMEO:"], settings(40, 1)), (["JULIET:", "a"], settings(33, 2, top_k=3)), (["e"], settings(17, 9))]

    async def scenario():
        jobs = [batching.Job(p, s) for p, s in good]
        for job in jobs:
            batcher.submit(job)
        batcher.start()
        while batcher.counts["steps"] < 2:  # the batch is running; now the poisoned request joins it
            await asyncio.sleep(0.001)
        poisoned = batching.Job(["ROMEO:"], settings(30, 666))
        batcher.submit(poisoned)
        results = await asyncio.gather(*map(collect_texts, [*jobs, poisoned]), return_exceptions=True)
        batcher.close()
        return results

    *texts, failure = asyncio.run(scenario())
    assert isinstance(failure, batching.Failed), failure
    assert failure.status == 500 and failure.args[0].startswith("internal error (id ")
    assert texts == want(generator, good)
    assert batcher.counts["requests_failed"] == 1 and batcher.counts["requests_served"] == 3
    assert batcher.counts["steps"] > 3  # the poisoned request did join steps that had others in them


def test_an_unexpected_error_in_a_handler_is_a_masked_json_500(served, caplog):
    app = serve_app.create_app(served)

    @app.get("/boom")
    def boom():
        raise KeyError("https://user:hunter2@example.com/?token=abc123")

    with caplog.at_level(logging.ERROR, logger="charrnn.serve"), \
            TestClient(app, raise_server_exceptions=False, base_url="http://localhost") as c:
        r = c.get("/boom")
        assert r.status_code == 500
        found = error_id(r.json()["error"])
        assert "hunter2" not in r.text and "KeyError" not in r.text
        assert c.get("/healthz").json() == {"status": "ok"}
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert f"GET /boom failed [error id {found}]" in logged and "Traceback" in logged and "hunter2" not in logged


# --- batching -----------------------------------------------------------------------------------


async def collect_texts(job, on_piece=None):
    """A job's texts (each prompt and its generated text), piece by piece."""
    out = list(job.prompts)
    async for pieces in job.pieces():
        for row, piece in pieces:
            out[row] += piece
        if on_piece is not None:
            on_piece()
    return out


async def run_jobs(batcher, requests, start_after: int | None = None):
    """Submit `requests` (prompts, settings) to a batcher; with `start_after`, the requests from
    that index on are submitted only once the first has received a piece (they join mid-way).
    Returns each job's texts."""
    jobs = []

    def collect(job):
        return collect_texts(job, first_piece.set)

    first_piece = asyncio.Event()
    early = requests if start_after is None else requests[:start_after]
    for prompts, given in early:
        jobs.append(batching.Job(prompts, given))
        batcher.submit(jobs[-1])
    batcher.start()  # every job submitted so far joins the first step together
    tasks = [asyncio.create_task(collect(j)) for j in jobs]
    if start_after is not None:
        await first_piece.wait()
        for prompts, given in requests[start_after:]:
            jobs.append(batching.Job(prompts, given))
            batcher.submit(jobs[-1])
            tasks.append(asyncio.create_task(collect(jobs[-1])))
    texts = await asyncio.gather(*tasks)
    batcher.close()
    return list(texts)


def settings(num_chars, seed, temperature=0.8, top_k=0, top_p=1.0) -> SamplingSettings:
    return SamplingSettings(num_chars, temperature, top_k, top_p, seed)


REQUESTS = [
    (["ROMEO:"], settings(90, 1)),
    (["JULIET:", "a"], settings(23, 2, top_k=3)),
    (["ROMEO:"], settings(90, 1)),  # the same request twice: the same text, whatever row it sits in
    (["The ", "b", "MERCUTIO:"], settings(57, 7, temperature=1.4, top_p=0.9)),
    (["e"], settings(1, 3)),
]


def want(engine, requests):
    return [engine.generate_text(prompts, s, VOCAB) for prompts, s in requests]


def test_requests_batched_together_get_their_lone_answers(generator):
    batcher = batching.Batcher(generator, max_batch=64, chunk=10)
    got = asyncio.run(run_jobs(batcher, REQUESTS))
    assert got == want(generator, REQUESTS)
    assert batcher.counts["max_rows"] == 8  # all of them in one batch
    # 90 characters in steps of at most 10, cut where a request ends (1, 23, 57): 12 steps, not 5 x 9
    assert batcher.counts["steps"] == 12 and batcher.counts["requests_served"] == 5


def test_a_request_joining_mid_generation_gets_its_lone_answer(generator):
    batcher = batching.Batcher(generator, max_batch=64, chunk=4)
    got = asyncio.run(run_jobs(batcher, REQUESTS, start_after=1))
    assert got == want(generator, REQUESTS)
    assert batcher.counts["max_rows"] > 1  # they did share steps


def test_max_batch_bounds_the_rows_and_every_request_still_gets_its_answer(generator):
    batcher = batching.Batcher(generator, max_batch=3, chunk=8)
    assert asyncio.run(run_jobs(batcher, REQUESTS)) == want(generator, REQUESTS)
    assert batcher.counts["max_rows"] == 3


def test_no_batching_runs_one_request_at_a_time(generator):
    batcher = batching.Batcher(generator, chunk=16, batching=False)
    assert asyncio.run(run_jobs(batcher, REQUESTS)) == want(generator, REQUESTS)
    assert batcher.counts["max_rows"] == 3  # the largest request alone


def test_a_cancelled_request_leaves_the_batch_at_the_next_step(generator):
    async def scenario():
        batcher = batching.Batcher(generator, chunk=2)
        long_job = batching.Job(["ROMEO:"], settings(5_000, 1))
        other = batching.Job(["a"], settings(40, 2))
        batcher.submit(long_job)
        batcher.submit(other)
        batcher.start()
        await long_job.events.get()
        long_job.cancel()
        texts = await collect_texts(other)
        for _ in range(100):
            if batcher.stats()["rows"] == 0:
                break
            await asyncio.sleep(0.01)
        batcher.close()
        return batcher, texts

    batcher, texts = asyncio.run(scenario())
    assert texts == want(generator, [(["a"], settings(40, 2))])[0]
    assert batcher.counts["requests_cancelled"] == 1 and batcher.counts["requests_served"] == 1
    assert batcher.counts["chars_generated"] < 200  # not the 5,000 asked for
    assert batcher.stats()["rows"] == 0


def test_a_short_request_is_served_next_while_long_ones_stream_and_they_share_the_batch(generator):
    """Twelve requests of 64 rows x 10,000 characters hold far more rows than a batch: each gets its
    share in turn (full batches, an eighth of the chunk a step), and a 100-character request arriving
    meanwhile waits for the step in flight, then is served in steps of its own, a whole chunk each:
    its first (a newcomer's), and the one that finishes it."""
    async def scenario():
        batcher = batching.Batcher(generator, max_batch=64, chunk=50)
        big = [batching.Job(["ROMEO:"] * 64, settings(10_000, s)) for s in range(12)]
        for job in big:
            batcher.submit(job)
        batcher.start()
        while batcher.counts["steps"] < 24:
            await asyncio.sleep(0.005)
        shares = [job.served_chars for job in big]
        small = batching.Job(["JULIET:"], settings(100, 99))
        at = batcher.counts["steps"]
        batcher.submit(small)
        text = await collect_texts(small)
        steps = batcher.counts["steps"] - at
        for job in big:
            job.cancel()
        while batcher.stats()["rows"]:
            await asyncio.sleep(0.01)
        batcher.close()
        return shares, steps, text

    shares, steps, text = asyncio.run(scenario())
    assert steps <= 3, steps  # the step in flight, then two steps of 50 characters
    assert text == want(generator, [(["JULIET:"], settings(100, 99))])[0]
    assert min(shares) > 0 and max(shares) <= 2 * min(shares), shares  # nobody held the batch


def test_a_request_past_its_deadline_ends_and_frees_its_rows(generator):
    async def scenario():
        batcher = batching.Batcher(generator, chunk=10)
        late = batching.Job(["ROMEO:"] * 4, settings(100_000, 1), timeout=0.2)
        quick = batching.Job(["a"], settings(30, 2), timeout=60)
        batcher.submit(late)
        batcher.submit(quick)
        batcher.start()
        results = await asyncio.gather(*(collect_texts(j) for j in (late, quick)), return_exceptions=True)
        batcher.close()
        return batcher, results

    batcher, (late, quick) = asyncio.run(scenario())
    assert isinstance(late, batching.Failed) and late.status == 504 and "--request-timeout (0.2 s)" in str(late)
    assert quick == want(generator, [(["a"], settings(30, 2))])[0]
    assert batcher.counts["requests_timed_out"] == 1 and batcher.stats()["rows"] == 0


def test_concurrent_http_requests_get_their_lone_answers_plain_or_streamed(served, generator):
    bodies = [{"prompts": prompts, **s.as_dict()} for prompts, s in REQUESTS] * 3
    bodies = [{**b, "stream": i % 2 == 1} for i, b in enumerate(bodies)]
    app = serve_app.create_app(served, ServeOptions(chunk=5))

    async def together():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
                return await asyncio.gather(*(c.post("/v1/generate", json=b) for b in bodies))

    answers = asyncio.run(together())
    for body, r in zip(bodies, answers):
        texts = joined(events(r.text)) if body["stream"] else r.json()["texts"]
        assert texts == expected(generator, body["prompts"], **{k: body[k] for k in SamplingSettings.names()})
    assert app.state.batcher.counts["max_rows"] > 3  # requests were merged, not run one by one


def test_a_plain_request_whose_client_goes_away_ends_and_frees_its_rows(served):
    """At the ASGI level: the body arrives, then (while generating) the client disconnects."""
    app = serve_app.create_app(served, ServeOptions(chunk=1))
    body = json.dumps({"prompt": "ROMEO:", "num_chars": 10_000}).encode()

    async def scenario():
        async with app.router.lifespan_context(app):
            gone = asyncio.Event()
            messages = [{"type": "http.request", "body": body, "more_body": False}]

            async def receive():
                if messages:
                    return messages.pop(0)
                await gone.wait()
                return {"type": "http.disconnect"}

            async def send(message):
                pass

            scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                     "scheme": "http", "path": "/v1/generate", "raw_path": b"/v1/generate", "root_path": "",
                     "query_string": b"", "headers": [(b"content-type", b"application/json"), (b"host", b"localhost")],
                     "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000)}
            call = asyncio.create_task(app(scope, receive, send))
            while app.state.batcher.stats()["rows"] == 0:
                await asyncio.sleep(0.01)
            gone.set()
            await asyncio.wait_for(call, timeout=5)  # the handler ends: it does not wait for 10,000 characters
            while app.state.batcher.stats()["rows"]:
                await asyncio.sleep(0.01)
            return app.state.batcher.stats()

    stats = asyncio.run(scenario())
    assert stats["requests_cancelled"] == 1 and stats["requests_served"] == 0
    assert stats["chars_generated"] < 10_000


def test_too_many_waiting_requests_get_503(generator):
    async def scenario():
        batcher = batching.Batcher(generator, max_waiting=2)  # not started: nothing leaves the queue
        batcher.submit(batching.Job(["a"], settings(5, 1)))
        batcher.submit(batching.Job(["a"], settings(5, 1)))
        with pytest.raises(batching.Busy, match="busy: 2 requests are in progress already"):
            batcher.submit(batching.Job(["a"], settings(5, 1)))

    asyncio.run(scenario())


def test_a_busy_batcher_is_a_503(generator, monkeypatch):
    app = serve_app.create_app(served_lib.Served("tiny", generator, VOCAB, SamplingSettings(), {}))

    def busy(job):
        app.state.batcher.counts["requests_refused"] += 1
        raise batching.Busy("busy: 1024 requests are in progress already; try again shortly")

    with TestClient(app, base_url="http://localhost") as client:
        monkeypatch.setattr(app.state.batcher, "submit", busy)
        answer = client.post("/v1/generate", json={"prompt": "ab"})
        stats = client.get("/v1/stats").json()
        metrics = client.get("/metrics").text
    assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
    assert answer.json() == {"error": "busy: 1024 requests are in progress already; try again shortly"}
    assert stats["requests_refused"] == 1
    assert 'charrnn_refused_total{reason="busy"} 1.0' in metrics
    assert 'charrnn_requests_total{route="/v1/generate",status="503"} 1.0' in metrics


# --- the command --------------------------------------------------------------------------------


def test_add_parser_gives_the_cli_a_serve_command():
    import argparse

    p = argparse.ArgumentParser(prog="charrnn")
    server.add_parser(p.add_subparsers(dest="command"))
    args = p.parse_args(["serve", "--model", "models:/charrnn@champion"])
    assert args.func is server.cmd_serve and args.model == "models:/charrnn@champion"
    assert (args.host, args.port, args.max_chars, args.max_prompts, args.max_batch, args.batching) == \
        ("127.0.0.1", 8000, 10_000, 64, 64, True)
    assert server.options_of(args) == ServeOptions()
    args = p.parse_args(["serve", "--no-batching", "--chunk", "9", "--allowed-host", "box.lan", "--allowed-host", "b",
                         "--allow-origin", "https://app.example.com", "--request-timeout", "12.5"])
    assert server.options_of(args) == ServeOptions(batching=False, chunk=9, allowed_hosts=("box.lan", "b"),
                                                   allowed_origins=("https://app.example.com",), request_timeout=12.5)


def test_the_api_key_comes_from_the_option_or_the_environment(monkeypatch):
    import argparse

    p = argparse.ArgumentParser()
    server.add_options(p)
    monkeypatch.setenv("CHARRNN_API_KEY", "from-env")
    assert server.options_of(p.parse_args([])).api_key == "from-env"
    assert server.options_of(p.parse_args(["--api-key", "given"])).api_key == "given"
    monkeypatch.setenv("CHARRNN_API_KEY", "")
    assert server.options_of(p.parse_args([])).api_key is None


@pytest.mark.parametrize("options,message", [
    (["--max-batch", "65"], "--max-batch must be from 1 to 64"),
    (["--max-batch", "0"], "--max-batch must be from 1 to 64"),
    (["--max-chars", "0"], "--max-chars must be from 1"),
    (["--chunk", "0"], "--chunk must be at least 1"),
    (["--max-connections", "0"], "--max-connections must be at least 1"),
    (["--port", "70000"], "--port must be from 0 to 65535"),
    (["--host", ""], "--host must name an address"),
    (["--host", "  "], "--host must name an address"),
    (["--request-timeout", "0"], "--request-timeout must be a positive number of seconds"),
    (["--header-timeout", "inf"], "--header-timeout must be a positive number of seconds"),
    (["--body-timeout", "nan"], "--body-timeout must be a positive number of seconds"),
    (["--api-key", " "], "--api-key (or CHARRNN_API_KEY) must not be empty"),
    (["--allow-origin", "app.example.com"], "--allow-origin takes an origin such as https://app.example.com"),
    (["--allow-origin", "https://app.example.com/page"], "no path"),
])
def test_bad_options_are_one_clear_error_before_anything_loads(options, message, tmp_path):
    import argparse

    p = argparse.ArgumentParser()
    server.add_options(p)
    with pytest.raises(ServeError) as e:
        server.cmd_serve(p.parse_args(["--model", str(tmp_path / "absent"), *options]))
    assert message in str(e.value)


def test_a_port_in_use_is_one_clear_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServeError, match=f"cannot listen on 127.0.0.1:{port}: Address already in use"):
            server.listening_socket("127.0.0.1", port)


def test_a_missing_model_is_one_clear_error(tmp_path):
    with pytest.raises(network.ModelError, match="does not exist"):
        served_lib.load(str(tmp_path / "absent"))


# --- the model card, from a project with an MLflow store -----------------------------------------


@pytest.fixture(scope="module")
def tracked_project(tmp_path_factory, served):
    """A project (dvc.yaml) holding the tiny model, its held-out metrics file, and an MLflow store
    with the model's run and a registered version @champion, made the way the pipeline makes them."""
    root = tmp_path_factory.mktemp("project")
    (root / "dvc.yaml").write_text("stages: {}\n")
    model_dir = save_tiny_model(root / "data" / "model")
    full_hash = metricfiles.model_hash(model_dir)
    (root / "metrics").mkdir()
    (root / "metrics" / "perplexity.json").write_text(json.dumps({"bpc": 2.25, "loss": 1.56, "perplexity": 4.76, "chars": 100}))
    (root / "data" / "evaluation.json").write_text(json.dumps({"model": metricfiles.model_id(full_hash)}))
    params = Params.from_dict({"data": {"source": SECRET_SOURCE}, "train": {"embedding_dim": 8, "units": 32, "layers": 2},
                               "sample": {"num_chars": 33, "temperature": 0.7, "seed": 5, "top_k": 3, "top_p": 0.9}})
    mp = pytest.MonkeyPatch()
    mp.setenv("CHARRNN_TRACKING", "1")
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    mp.delenv("DVC_ROOT", raising=False)
    mp.setenv("DVC_EXP_NAME", "tiny-exp")
    try:
        generation.export(generation.Generator(*network.load(model_dir)), root / "data" / "generator")
        with tracking.train_run(params, root, tags={tracking.MODEL_HASH_TAG: full_hash}) as run:
            run.log_metrics({"held_out_bpc": 2.5, "held_out_loss": 1.7, "held_out_perplexity": 5.5})
            version = registry.register(run, "charrnn", root / "data" / "generator", model_dir / "vocab.json", full_hash,
                                        {registry.HELD_OUT_BPC_TAG: "2.5000", "charrnn.corpus_hash": "c" * 64,
                                         "charrnn.dvc_exp_name": "tiny-exp"}, registry.signature_defaults(params.sample))
            run_id = run.run_id
        assert version is not None
        registry.promote(root, "charrnn", str(version), "champion")
    finally:
        mp.undo()
    return root, run_id, version


def store_bytes(root: Path) -> bytes:
    return (root / "mlruns" / "mlflow.db").read_bytes()


def test_the_card_of_a_model_directory_tells_where_it_came_from(tracked_project):
    root, run_id, version = tracked_project
    before = store_bytes(root)
    card = served_lib.load(str(root / "data" / "model")).card
    assert store_bytes(root) == before  # only read
    assert card["corpus"] == {"source": "https://***@example.com/corpus.txt?token=***", "sha256": "c" * 64}
    assert card["held_out"] == {"loss": 1.56, "bpc": 2.25, "perplexity": 4.76, "from": "metrics/perplexity.json"}
    assert card["mlflow"] == {"experiment": "charrnn", "run_id": run_id, "run_name": "tiny-exp",
                              "dvc_experiment": "tiny-exp", "registered_model": "charrnn", "version": int(version),
                              "aliases": ["champion"]}
    assert card["model_hash"] == metricfiles.model_hash(root / "data" / "model")


def test_a_model_directory_serves_with_its_runs_sample_defaults(tracked_project):
    root, _, _ = tracked_project
    served = served_lib.load(str(root / "data" / "model"))
    assert served.defaults == SamplingSettings(num_chars=33, temperature=0.7, top_k=3, top_p=0.9, seed=5)
    with TestClient(serve_app.create_app(served, ServeOptions(max_chars=20)), base_url="http://localhost") as c:
        body = c.post("/v1/generate", json={"prompt": "ROMEO:"}).json()
        assert body["num_chars"] == 20  # the run's 33, capped by --max-chars
        assert body["texts"] == served.engine.generate_text(["ROMEO:"], served.defaults.replace(num_chars=20), VOCAB)


def test_a_registered_model_is_served_from_the_store(tracked_project, monkeypatch):
    root, run_id, version = tracked_project
    monkeypatch.chdir(root / "data")  # anywhere inside the project
    before = store_bytes(root)
    served = served_lib.load("models:/charrnn@champion")
    assert store_bytes(root) == before and not (root / "data" / "mlflow.db").exists()
    saved = tf.saved_model.load(str(root / "data" / "generator"))
    card = served.card
    assert card["mlflow"]["run_id"] == run_id and card["mlflow"]["version"] == int(version)
    assert card["held_out"] == {"loss": 1.7, "bpc": 2.5, "perplexity": 5.5, "from": "MLflow run"}
    assert card["architecture"].items() >= {"vocab_size": VOCAB.size, "embedding_dim": 8, "units": 32, "layers": 2,
                                            "cell": "gru", "dropout": 0.0}.items()  # from the run's train.* params
    with TestClient(serve_app.create_app(served), base_url="http://localhost") as c:
        body = c.post("/v1/generate", json={"prompts": ["ROMEO:", "a"]}).json()
        assert body["model"] == f"models:/charrnn@champion (version {version})"
        out = saved.generate(tf.constant(["ROMEO:", "a"]), tf.constant(33), tf.constant(0.7), tf.constant(3),
                             tf.constant(0.9), tf.constant(5, tf.int64))
        assert body["texts"] == [s.decode() for s in out.numpy()]


def test_a_project_without_a_store_gets_no_provenance_and_no_new_store(tmp_path):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    served = served_lib.load(str(save_tiny_model(tmp_path / "data" / "model")))
    assert served.card["mlflow"] is None and served.card["held_out"] is None
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlflow.db").exists()


def test_an_unreadable_store_is_a_warning_not_a_failure(tmp_path, caplog):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "mlruns").mkdir()
    (tmp_path / "mlruns" / "mlflow.db").write_bytes(b"not a database at all" * 100)
    with caplog.at_level(logging.WARNING, logger="charrnn.serve"):
        served = served_lib.load(str(save_tiny_model(tmp_path / "data" / "model")))
    assert served.card["mlflow"] is None
    assert "no MLflow provenance" in caplog.text


def test_connections_to_the_served_socket_send_without_delay():
    """TCP_NODELAY on every accepted connection: without it, each answer on a kept-alive
    connection waited ~40 ms for the client's delayed ACK."""
    sock = server.listening_socket("127.0.0.1", 0)
    nodelay = []

    async def main():
        def accepted(reader, writer):
            nodelay.append(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(accepted, sock=sock)
        reader, writer = await asyncio.open_connection(*sock.getsockname())
        await reader.read()  # until the server closes it
        writer.close()
        server.close()

    asyncio.run(main())
    assert nodelay and nodelay[0] != 0


# --- a real server process ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def server_log(tmp_path_factory):
    return tmp_path_factory.mktemp("server") / "server.log"


@pytest.fixture(scope="module")
def process(model_dir, server_log):
    with server.spawn(model_dir, "--max-chars", "20000", "--chunk", "5", log_path=server_log) as spawned:
        yield spawned


@pytest.mark.slow
def test_a_client_that_goes_away_frees_its_rows(process):
    with httpx.Client(base_url=process.url, timeout=30) as c:
        before = c.get("/v1/stats").json()
        with c.stream("POST", "/v1/generate", json={"prompt": "ROMEO:", "num_chars": 20_000, "stream": True}) as r:
            next(r.iter_lines())  # the prompt's event: the request is in the batch
        # and a plain request whose client gives up
        with pytest.raises(httpx.ReadTimeout):
            c.post("/v1/generate", json={"prompt": "JULIET:", "num_chars": 20_000}, timeout=0.5)
        deadline = time.monotonic() + 10
        while (stats := c.get("/v1/stats").json())["rows"] and time.monotonic() < deadline:
            time.sleep(0.05)
    assert stats["rows"] == 0 and stats["requests_cancelled"] - before["requests_cancelled"] == 2
    assert stats["chars_generated"] - before["chars_generated"] < 20_000


@pytest.mark.slow
def test_under_a_bounded_load_every_answer_is_right_and_memory_stays_flat(process, generator):
    """500 requests from 32 threads within 90 s: plain and streamed ones (compared with
    generate_text), bad ones (their 4xx), and streams dropped after their first event. Then the
    server is up and holds no rows, and its RSS grew by less than 16 MB from the end of the
    warm-up (100 requests of every kind) to the end of the load (400 more). Measured: +3 to +5 MB
    (the allocator settling). 16 MB catches what grows with the load: a graph traced again per
    batch size or per request (MBs each), or anything of 40 KB or more kept per request; a leak
    of a few KB per request hides in the allocator's noise, which is why the batcher's own
    counters (rows, waiting, cancelled) are checked too."""
    import psutil

    good = [(["ROMEO:"], settings(120, s, temperature=0.6 + 0.1 * (s % 5), top_k=s % 4,
                                         top_p=1.0 if s % 3 else 0.9)) for s in range(12)]
    good += [(["JULIET:", "a", "The "], settings(60, 40 + s)) for s in range(4)]
    wanted = want(generator, good)
    bad = [({"prompt": ""}, 422), ({"prompt": "a", "num_chars": 0}, 422), ({"prompt": "a", "temperature": 0}, 422),
           ({"prompt": "a", "top_p": 2}, 422), ({"prompt": "€"}, 422), ({"prompt": "a", "x": 1}, 422),
           (b"{not json", 400), (b"\xff", 400), ({"prompt": "a", "num_chars": 10**9}, 422)]

    def one(i: int, c: httpx.Client) -> str:
        kind = i % 10
        if kind in (0, 1, 2, 3, 4):  # plain
            prompts, s = good[i % len(good)]
            r = c.post("/v1/generate", json={"prompts": prompts, **s.as_dict()})
            assert r.status_code == 200 and r.json()["texts"] == wanted[i % len(good)], r.text
            return "good"
        if kind in (5, 6):  # streamed
            prompts, s = good[i % len(good)]
            r = c.post("/v1/generate", json={"prompts": prompts, **s.as_dict(), "stream": True})
            assert r.status_code == 200 and joined(events(r.text)) == wanted[i % len(good)]
            assert events(r.text)[-1][0] == "done"
            return "good"
        if kind in (7, 8):  # bad
            body, status = bad[i % len(bad)]
            r = c.post("/v1/generate", content=body if isinstance(body, bytes) else json.dumps(body).encode(),
                       headers=JSON)
            assert r.status_code == status and "error" in r.json(), r.text
            return "bad"
        with c.stream("POST", "/v1/generate", json={"prompt": "ROMEO:", "num_chars": 5_000, "stream": True}) as r:
            next(r.iter_lines())
        return "dropped"

    def load(n: int, offset: int) -> list[str]:
        local = threading.local()

        def task(i):
            if not hasattr(local, "client"):
                local.client = httpx.Client(base_url=process.url, timeout=60)
            return one(i, local.client)

        with ThreadPoolExecutor(32) as pool:
            return list(pool.map(task, range(offset, offset + n)))

    memory = psutil.Process(process.process.pid)
    start = time.monotonic()
    load(100, 0)  # warm-up: every kind of request, every batch size the load reaches
    rss_warm = memory.memory_info().rss
    kinds = load(400, 100)
    seconds = time.monotonic() - start
    rss_end = memory.memory_info().rss
    with httpx.Client(base_url=process.url, timeout=10) as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        deadline = time.monotonic() + 10
        while (stats := c.get("/v1/stats").json())["rows"] and time.monotonic() < deadline:
            time.sleep(0.05)
    print(f"\n500 requests in {seconds:.1f} s; server RSS {rss_warm / 2**20:.1f} MB after the warm-up, "
          f"{rss_end / 2**20:.1f} MB after the load; {stats}")
    assert seconds < 90
    assert kinds.count("good") == 280 and kinds.count("bad") == 80 and kinds.count("dropped") == 40
    assert stats["rows"] == 0 and stats["waiting"] == 0 and stats["requests_cancelled"] >= 40
    assert process.process.poll() is None
    assert rss_end - rss_warm < 16 * 2**20


def test_the_default_prompt_is_the_sample_stages_first(tmp_path):
    """The model's own sample.prompts when its run set them; else the first prompt the sample stage
    draws from the project's held-out text; else (no corpus, or one the model cannot spell) the
    vocabulary's most frequent character that is not blank."""
    from charrnn.core import paths
    from charrnn.data.split import Split

    corpus = tmp_path / paths.CORPUS
    corpus.parent.mkdir(parents=True)
    corpus.write_text("ROMEO: ab\n\n" * 200 + "JULIET: cd\n\nROMEO: ba\n\n" * 20, encoding="utf-8")
    drawn = Split.of(corpus, 0.1).prompts()[0]
    assert drawn in ("JULIET: cd", "ROMEO: ba")
    assert served_lib._default_prompt({"sample.prompts": '["TIBALT:"]'}, VOCAB, tmp_path) == "TIBALT:"
    assert served_lib._default_prompt({}, VOCAB, tmp_path) == drawn
    assert served_lib._default_prompt({"data.val_fraction": "0.1"}, VOCAB, tmp_path) == drawn
    frequent = max((c, ch) for c, ch in zip(VOCAB.counts, VOCAB.chars) if ch.strip())[1]
    assert served_lib._default_prompt({}, VOCAB, None) == frequent
    corpus.write_text("ZZZZ\n" * 400, encoding="utf-8")  # a corpus the model cannot spell: Z is not its
    assert served_lib._default_prompt({}, VOCAB, tmp_path) == frequent
