"""Load benchmark of `halluc serve`: throughput and latency of concurrent clients against sequential ones.

The script starts the server itself, in this process, on 127.0.0.1 (loopback only; a free port), with
toy-llava (or --model) and the server's defaults (max batch 32, max wait 10 ms), and sends the same fixed
set of requests, POPE-style questions about rendered toy-world scenes (6 per scene, PNG data URIs, greedy,
--max-tokens), through the real `openai` client, per method:
    sequential:  one client, one request at a time, against a server whose max wait is 0 (a lone client
                 never waits for a batch to fill: the fairest sequential baseline);
    concurrent:  --clients threads, each with its own client, taking requests from a shared list.
Each mode stops taking new requests after --time-limit seconds (the row then says so). One CSV row per
method and mode:
    method, mode, clients, requests, completed, timed_out, seconds, requests_per_second,
    speedup_vs_sequential, p50_ms, p95_ms, batches, mean_batch, answers_equal, max_batch_size,
    max_wait_ms, max_tokens, threads, device, torch, transformers, halluc, git_commit, date
`answers_equal` is the share of concurrent answers equal to the sequential answer to the same request
(greedy decoding: it must be 1). Latency is per request, from send to the full answer, at the client.

    python speed/bench_serve.py                                    # 192 requests, 32 clients, none and vcd
    python speed/bench_serve.py --methods none --requests 24 --clients 8 --out /tmp/serve.csv
"""
from __future__ import annotations

import argparse
import base64
import io
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import halluc  # noqa: E402
from halluc import api  # noqa: E402
from speed.common import csv_rows, provenance  # noqa: E402

COLUMNS = ["method", "mode", "clients", "requests", "completed", "timed_out", "seconds", "requests_per_second",
           "speedup_vs_sequential", "p50_ms", "p95_ms", "batches", "mean_batch", "answers_equal", "max_batch_size",
           "max_wait_ms", "max_tokens", "threads", "device", "torch", "transformers", "halluc", "git_commit", "date"]
SHOWN = ["method", "mode", "clients", "completed", "requests_per_second", "speedup_vs_sequential", "p50_ms",
         "p95_ms", "mean_batch", "answers_equal"]
QUESTIONS_PER_IMAGE = 6


def workload(requests: int) -> list[tuple[str, str]]:
    """(image data URI, question) pairs: per toy-world scene three present and three absent objects."""
    from halluc.world.scenes import NAMES, WorldConfig, render_scene, scene_at

    pairs, index = [], 0
    while len(pairs) < requests:
        scene = scene_at(WorldConfig(), "val", index)
        buffer = io.BytesIO()
        render_scene(scene).save(buffer, "PNG")
        uri = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
        present = list(dict.fromkeys(o.category for o in scene.objects))[:3]
        absent = [n for n in NAMES if n not in present][index % 7::7][:QUESTIONS_PER_IMAGE - len(present)]
        pairs += [(uri, f"Is there a {name} in the image?") for name in present + absent]
        index += 1
    return pairs[:requests]


class Server:
    """halluc serve's app under uvicorn in a thread, on 127.0.0.1 and a free port."""

    def __init__(self, model, **options):
        import uvicorn

        from halluc.serve import ServeOptions, create_app

        self.app = create_app(model, ServeOptions(port=0, served_name="model", **options))
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise SystemExit("the server did not start")
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.server.servers[0].sockets[0].getsockname()[1]}/v1"
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(60)

    @property
    def batches(self) -> int:
        return self.app.state.batcher.batches


def drive(url: str, pairs, method: str, clients: int, max_tokens: int, time_limit: float):
    """Send every pair from `clients` threads; returns (answers by index, latencies, seconds, timed out)."""
    import openai

    answers: dict[int, str] = {}
    latencies: list[float] = []
    next_index = iter(range(len(pairs)))
    lock, failures = threading.Lock(), []
    start = time.perf_counter()

    def client_loop():
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=max(time_limit, 60))
        while time.perf_counter() - start < time_limit:
            with lock:
                i = next(next_index, None)
            if i is None:
                return
            uri, question = pairs[i]
            sent = time.perf_counter()
            try:
                reply = client.chat.completions.create(
                    model=f"model+{method}", max_tokens=max_tokens,
                    messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": uri}},
                                                           {"type": "text", "text": question}]}])
            except Exception as err:  # noqa: BLE001  (reported after the run)
                failures.append(repr(err))
                return
            with lock:
                latencies.append(time.perf_counter() - sent)
                answers[i] = reply.choices[0].message.content

    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise SystemExit(f"{len(failures)} requests failed, first: {failures[0]}")
    return answers, latencies, time.perf_counter() - start, len(answers) < len(pairs)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) of `values`, linearly interpolated."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[int(q) - 1]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="toy-llava")
    p.add_argument("--methods", default="none,vcd", help="comma list of methods")
    p.add_argument("--requests", type=int, default=192, help="requests per mode (a fixed count)")
    p.add_argument("--clients", type=int, default=32, help="concurrent clients")
    p.add_argument("--max-tokens", type=int, default=8)
    p.add_argument("--max-batch-size", type=int, default=32)
    p.add_argument("--max-wait-ms", type=float, default=10.0)
    p.add_argument("--time-limit", type=float, default=600.0, help="seconds per mode before no new requests")
    p.add_argument("--warmup", type=int, default=4, help="requests before timing (not counted)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, default=REPO / "runs" / "bench_serve.csv")
    args = p.parse_args(argv)
    if min(args.requests, args.clients, args.max_tokens, args.max_batch_size) < 1 or args.time_limit <= 0:
        p.error("--requests, --clients, --max-tokens, --max-batch-size must be >= 1 and --time-limit > 0")
    methods = [m for m in args.methods.split(",") if m]
    if not methods:
        p.error("--methods is empty")
    for method in methods:
        api.make_methods(method, {})  # an unknown method fails before the model loads
    torch.set_num_threads(args.threads)
    model = halluc.load(args.model, device=args.device)
    pairs = workload(args.requests)
    common = dict(max_tokens=args.max_tokens, max_batch_size=args.max_batch_size, threads=args.threads,
                  requests=args.requests, **provenance(model.device))
    with csv_rows(args.out, COLUMNS, SHOWN) as write:
        for method in methods:
            sequential: dict[int, str] = {}
            sequential_rate = None
            for mode, clients, wait in (("sequential", 1, 0.0), ("concurrent", args.clients, args.max_wait_ms)):
                with Server(model, max_batch_size=args.max_batch_size,
                            max_wait_ms=wait) as server:
                    drive(server.url, workload(args.warmup) if args.warmup else [], method, 1, args.max_tokens,
                          args.time_limit)
                    before = server.batches
                    answers, latencies, seconds, timed_out = drive(server.url, pairs, method, clients,
                                                                   args.max_tokens, args.time_limit)
                    batches = server.batches - before
                if mode == "sequential":
                    sequential, sequential_rate = answers, len(answers) / seconds
                same = [answers[i] == sequential[i] for i in answers if i in sequential]
                rate = len(answers) / seconds
                write({**common, "method": method, "mode": mode, "clients": clients, "completed": len(answers),
                       "timed_out": int(timed_out), "seconds": seconds, "requests_per_second": rate,
                       "speedup_vs_sequential": rate / sequential_rate,
                       "p50_ms": 1000 * percentile(latencies, 50), "p95_ms": 1000 * percentile(latencies, 95),
                       "batches": batches, "mean_batch": len(answers) / max(batches, 1),
                       "answers_equal": sum(same) / len(same) if same else None, "max_wait_ms": wait})


if __name__ == "__main__":
    main()
