"""Dynamic batching, measured: `charrnn serve` against itself with --no-batching.

    .venv/bin/python bench/serve.py [--model DIR] [--clients 64] [--chars 500] [--rounds 2] [--only fairness]

The targets, on a default-size model (GRU 512 units, embedding 128, tiny
shakespeare's 65 characters; random weights unless --model is given: generation's speed does
not depend on the weights):
- 64 concurrent clients, each asking for 500 characters: at least 8x the total characters per
  second of the same server with --no-batching;
- one lone request of 500 characters: a p95 latency within 1.5x of the library's time for the
  same request in-process (Generator.generate_text, median, measured here on the same model);
- fairness: while 12 clients each stream 64 prompts x 10,000 characters, a lone 100-character
  request's p95 stays within 3x of its p95 on the idle server.
Both servers run in child processes on 127.0.0.1 (the only address the clients use); the load is
bounded: `rounds` x `clients` requests plus `lone` single ones, each with a timeout. Every answer
is checked: the batched server's texts must equal the unbatched server's, and the lone answer
must equal generate_text's.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import common  # first: quiets TensorFlow before anything imports it

PROMPT = "ROMEO:"
TEMPERATURE = 0.8
TIMEOUT_S = 300


def default_model(directory: Path) -> Path:
    """A default-size model with random weights."""
    from charrnn.data.vocab import Vocabulary, count_chars
    from charrnn.nn import network

    vocab = Vocabulary.from_counts(count_chars([common.ALPHABET]))
    config = network.ModelConfig(vocab_size=vocab.size, embedding_dim=128, units=512,
                                   vocab_fingerprint=vocab.fingerprint)
    network.save(network.build(config), vocab, directory / "model")
    return directory / "model"


def library_seconds(model_dir: Path, chars: int, repeats: int) -> tuple[float, str]:
    """The library's median time for one prompt in-process, and its text (seed 0)."""
    from charrnn.nn import network
    from charrnn.sampling import generation
    from charrnn.sampling.settings import SamplingSettings

    generator = generation.Generator(*network.load(model_dir))
    settings = SamplingSettings(chars, TEMPERATURE, top_k=0, top_p=1.0, seed=0)
    text = generator.generate_text([PROMPT], settings)[0]  # traces the graphs
    times = []
    for _ in range(repeats):
        with common.Timer() as t:
            generator.generate_text([PROMPT], settings)
        times.append(t.seconds)
    return common.median(times), text


def ask(client, url: str, seed: int, chars: int) -> tuple[float, str]:
    start = time.perf_counter()
    r = client.post(f"{url}/v1/generate", json={"prompt": PROMPT, "num_chars": chars, "temperature": TEMPERATURE,
                                               "seed": seed, "top_k": 0, "top_p": 1.0}, timeout=TIMEOUT_S)
    r.raise_for_status()
    return time.perf_counter() - start, r.json()["texts"][0]


def lone(url: str, chars: int, n: int) -> tuple[list[float], str]:
    import httpx

    with httpx.Client() as client:
        ask(client, url, 0, chars)  # warm: a connection, the server's first request
        results = [ask(client, url, 0, chars) for _ in range(n)]
    return [s for s, _ in results], results[-1][1]


def concurrent(url: str, clients: int, chars: int, rounds: int) -> tuple[float, dict[int, str]]:
    """Characters per second of `rounds` bursts of `clients` simultaneous requests (seeds 0..)."""
    import httpx

    pool = [httpx.Client() for _ in range(clients)]
    texts, seconds = {}, 0.0
    with ThreadPoolExecutor(clients) as executor:
        for _ in range(rounds):
            start = time.perf_counter()
            answers = list(executor.map(lambda i: ask(pool[i], url, i, chars), range(clients)))
            seconds += time.perf_counter() - start
            texts.update({i: text for i, (_, text) in enumerate(answers)})
    for client in pool:
        client.close()
    return rounds * clients * chars / seconds, texts


def fairness(url: str, streams: int, rows: int, chars: int, lone_chars: int, n: int) -> tuple[list[float], list[float]]:
    """A lone request's latencies on the idle server, then while `streams` clients each stream a
    request of `rows` x `chars` characters (they are dropped afterwards: the load is bounded)."""
    import threading

    import httpx

    idle, _ = lone(url, lone_chars, n)
    stop = threading.Event()

    def stream(i: int) -> None:
        body = {"prompts": [PROMPT] * rows, "num_chars": chars, "seed": 1000 + i, "stream": True}
        with httpx.Client(timeout=TIMEOUT_S) as client, client.stream("POST", f"{url}/v1/generate", json=body) as r:
            for _ in r.iter_bytes():
                if stop.is_set():
                    return

    threads = [threading.Thread(target=stream, args=(i,), daemon=True) for i in range(streams)]
    for t in threads:
        t.start()
    with httpx.Client() as client:
        deadline = time.monotonic() + 120
        while client.get(f"{url}/v1/stats").json()["active"] < streams and time.monotonic() < deadline:
            time.sleep(0.1)
        loaded = [ask(client, url, 0, lone_chars)[0] for _ in range(n)]
    stop.set()
    for t in threads:
        t.join(timeout=60)
    return idle, loaded


def p95(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(0.95 * (len(xs) - 1)))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="model directory (default: a default-size model, random weights)")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--chars", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=2, help="bursts of --clients requests per server")
    ap.add_argument("--lone", type=int, default=20, help="lone requests for the latency percentile")
    ap.add_argument("--chunk", type=int, default=None, help="the server's --chunk (default: its own)")
    ap.add_argument("--streams", type=int, default=12, help="clients streaming long requests during the fairness row")
    ap.add_argument("--stream-rows", type=int, default=64, help="prompts of each streaming request")
    ap.add_argument("--stream-chars", type=int, default=10_000, help="characters of each streaming request")
    ap.add_argument("--fair-chars", type=int, default=100, help="characters of the lone request amid the streams")
    ap.add_argument("--only", choices=["fairness"], default=None, help="the fairness row alone (one server)")
    a = ap.parse_args()
    if a.only == "fairness":
        return fairness_only(a)
    from charrnn.sampling import generation
    from charrnn.serve import server
    from charrnn.serve.options import MAX_BATCH

    generation.configure_threads()  # the library's side generates as `charrnn generate` does
    command = ".venv/bin/python bench/serve.py " + shlex.join(sys.argv[1:])
    load_before = common.load()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(a.model) if a.model else default_model(Path(tmp))
        reference_s, reference_text = library_seconds(model_dir, a.chars, repeats=a.lone)
        options = ["--max-batch", str(min(a.clients, MAX_BATCH))] + (["--chunk", str(a.chunk)] if a.chunk else [])
        with server.spawn(model_dir, *options, log_path=Path(tmp) / "batching.log") as spawned:
            lone_s, lone_text = lone(spawned.url, a.chars, a.lone)
            batched, batched_texts = concurrent(spawned.url, a.clients, a.chars, a.rounds)
            idle_s, loaded_s = fairness(spawned.url, a.streams, a.stream_rows, a.stream_chars, a.fair_chars, a.lone)
        with server.spawn(model_dir, "--no-batching", *options, log_path=Path(tmp) / "serial.log") as spawned:
            serial, serial_texts = concurrent(spawned.url, a.clients, a.chars, a.rounds)
    if lone_text != reference_text or batched_texts != serial_texts:
        sys.exit("error: the server's answers differ from the library's or between the two servers")

    print(f"### charrnn serve: dynamic batching ({common.now()})\n")
    print(common.table([
        {"row": f"throughput, {a.clients} concurrent clients x {a.chars} chars (chars/s; reference: --no-batching)",
         "reference": serial, "ours": batched, "unit": "chars/s", "ratio": batched / serial, "target": ">= 8x",
         "met": batched / serial >= 8},
        {"row": f"lone request of {a.chars} chars, p95 of {a.lone} (ms; reference: generate_text in-process, median)",
         "reference": reference_s * 1000, "ours": p95(lone_s) * 1000, "unit": "ms", "ratio": p95(lone_s) / reference_s,
         "target": "<= 1.5x", "met": p95(lone_s) / reference_s <= 1.5},
        fairness_row(a, idle_s, loaded_s),
    ]))
    print(f"\nlone request: median {common.median(lone_s) * 1000:.0f} ms, p95 {p95(lone_s) * 1000:.0f} ms; "
          f"answers checked: lone = generate_text, batched = --no-batching ({len(batched_texts)} texts)")
    print(f"machine: {common.machine()}; os.cpu_count() = {os.cpu_count()}; load average {load_before} before, "
          f"{common.load()} after")
    print(f"model: {a.model or 'default size (GRU 512, embedding 128, 65 characters), random weights'}")
    print(f"command: {command}")


def fairness_row(a, idle_s: list[float], loaded_s: list[float]) -> dict:
    return {"row": (f"lone request of {a.fair_chars} chars while {a.streams} clients stream {a.stream_rows} x "
                    f"{a.stream_chars:,} chars, p95 of {a.lone} (ms; reference: p95 on the idle server)"),
            "reference": p95(idle_s) * 1000, "ours": p95(loaded_s) * 1000, "unit": "ms",
            "ratio": p95(loaded_s) / p95(idle_s), "target": "<= 3x", "met": p95(loaded_s) / p95(idle_s) <= 3}


def fairness_only(a) -> None:
    from charrnn.serve import server

    command = ".venv/bin/python bench/serve.py " + shlex.join(sys.argv[1:])
    load_before = common.load()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(a.model) if a.model else default_model(Path(tmp))
        options = ["--chunk", str(a.chunk)] if a.chunk else []
        with server.spawn(model_dir, *options, log_path=Path(tmp) / "batching.log") as spawned:
            idle_s, loaded_s = fairness(spawned.url, a.streams, a.stream_rows, a.stream_chars, a.fair_chars, a.lone)
    print(f"### charrnn serve: fairness ({common.now()})\n")
    print(common.table([fairness_row(a, idle_s, loaded_s)]))
    print(f"\nmachine: {common.machine()}; load average {load_before} before, {common.load()} after")
    print(f"command: {command}")


if __name__ == "__main__":
    main()
