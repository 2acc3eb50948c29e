"""Load on the draw-a-digit server: N concurrent clients for T seconds.

    python benchmarks/serve_load.py --workdir runs/gap8k-tuned-seed0 [--clients 16]
        [--seconds 10] [--body png|json|both] [--json out.json]
    python benchmarks/serve_load.py --url http://127.0.0.1:8000 ...   # a server already up

With --workdir it starts `python -m jaxmnist.serve` on a free localhost port, waits for
it, and stops it at the end. Each client (an asyncio task with its own connection) posts
`/predict` back to back: a 200x200 PNG drawing of a digit (decoded and preprocessed by
the server) or the MNIST-format JSON body, alternating with --body both. Reports
requests/s, latency p50/p90/p99/max, and every non-200 answer or transport error; the
server and the clients share the machine's cores, as on a laptop demo.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def bodies(kind: str) -> list[tuple[str, bytes]]:
    from PIL import Image, ImageDraw

    image = Image.new("L", (200, 200), 255)
    ImageDraw.Draw(image).line([(60, 40), (140, 40), (90, 170)], fill=0, width=14)  # a 7
    buf = io.BytesIO()
    image.save(buf, "PNG")
    small = np.asarray(image.resize((28, 28)), np.uint8)
    pixels = json.dumps({"pixels": (255 - small).tolist()}).encode()
    out = {"png": ("image/png", buf.getvalue()), "json": ("application/json", pixels)}
    return [out["png"], out["json"]] if kind == "both" else [out[kind]]


async def client(url: str, payloads, until: float, latencies: list, errors: dict) -> None:
    import httpx

    async with httpx.AsyncClient(timeout=30) as http:
        i = 0
        while time.monotonic() < until:
            ctype, body = payloads[i % len(payloads)]
            i += 1
            t = time.perf_counter()
            try:
                r = await http.post(url + "/predict", content=body, headers={"content-type": ctype})
                key = None if r.status_code == 200 else f"HTTP {r.status_code}"
            except httpx.HTTPError as exc:
                key = type(exc).__name__
            if key is None:
                latencies.append(time.perf_counter() - t)
            else:
                errors[key] = errors.get(key, 0) + 1


async def load(url: str, clients: int, seconds: float, payloads) -> dict:
    latencies: list[float] = []
    errors: dict[str, int] = {}
    start = time.monotonic()
    await asyncio.gather(*(client(url, payloads, start + seconds, latencies, errors)
                           for _ in range(clients)))
    elapsed = time.monotonic() - start
    ms = np.array(latencies) * 1000.0
    pct = (lambda q: float(np.percentile(ms, q))) if len(ms) else (lambda q: None)
    return {"clients": clients, "seconds": elapsed, "requests": len(latencies),
            "requests_per_s": len(latencies) / elapsed, "p50_ms": pct(50), "p90_ms": pct(90),
            "p99_ms": pct(99), "max_ms": float(ms.max()) if len(ms) else None, "errors": errors}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(workdir: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "jaxmnist.serve", "--workdir", workdir,
                             "--port", str(port)], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"error: the server exited: {proc.stderr.read().strip()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("error: the server did not listen within 120 s")


def table(report: dict) -> str:
    rows = [[r["body"], r["clients"], f"{r['requests_per_s']:.0f}", f"{r['p50_ms']:.1f}",
             f"{r['p90_ms']:.1f}", f"{r['p99_ms']:.1f}", f"{r['max_ms']:.1f}",
             sum(r["errors"].values())] for r in report["results"]]
    return common.markdown_table(["body", "clients", "requests/s", "p50 ms", "p90 ms", "p99 ms",
                                  "max ms", "errors"], rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--workdir", help="start `python -m jaxmnist.serve` on this run")
    where.add_argument("--url", help="a server already running, e.g. http://127.0.0.1:8000")
    p.add_argument("--clients", type=int, nargs="+", default=[16])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--body", choices=["png", "json", "both"], default="both")
    p.add_argument("--json", metavar="PATH", help="write machine info and results here")
    args = p.parse_args(argv)
    load_before = common.load_average()
    proc, url = start_server(args.workdir) if args.workdir else (None, args.url.rstrip("/"))
    try:
        kinds = ["png", "json"] if args.body == "both" else [args.body]
        results = []
        for kind in kinds:
            for n in args.clients:
                r = asyncio.run(load(url, n, args.seconds, bodies(kind)))
                results.append({"body": kind, **r})
                print(f"{kind} x {n} clients: {r['requests_per_s']:.0f} requests/s, "
                      f"p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, errors {r['errors']}",
                      file=sys.stderr, flush=True)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
    report = {"machine": common.machine_info(with_jax=False),
              "config": {"url": url, "workdir": args.workdir, "seconds": args.seconds,
                         "server": "python -m jaxmnist.serve (Hypercorn, one process)"},
              "results": results}
    common.publish_run(report, table(report), args.json, load_before)
    return 1 if any(r["errors"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
