"""`python -m jaxmnist.serve --workdir DIR`: a draw-a-digit page and a JSON endpoint.

GET / is one page (`jaxmnist/web/`): draw a digit with mouse, pen or finger; beside it
the 28x28 image the net saw and a live bar chart of the ten probabilities.

POST /predict is what the page calls, and what scripts may call. The body is either

* an image file, Content-Type image/png or image/jpeg: any photo or drawing of one
  digit, preprocessed exactly as `python -m jaxmnist.predict` does
  (`jaxmnist.use.preprocess.to_mnist`); or
* JSON `{"pixels": [[...28 rows of 28 values 0..255...]]}`, Content-Type
  application/json: an image already in MNIST format (light ink on black, size-
  normalised and centred), used as it is, the way the test set is fed.

The answer is `{"prediction": k, "probabilities": [10 floats], "input": 28x28 ints}`.
Bad requests get a 4xx JSON `{"error": "..."}`: 413 over MAX_BODY bytes, 415 for another
content type, 400 for undecodable bodies, 422 for well-formed but unusable input (wrong
shape, values out of range, an image with no ink); no body, however malformed, gets a 5xx.
JSON nested deeper than MAX_JSON_DEPTH is refused before it is parsed. The network is
compiled once, at start, for batch 1. The server binds to 127.0.0.1 unless told otherwise.

The HTTP server is Hypercorn rather than uvicorn: a client that opens a connection and
then sends nothing (or half a request) is dropped after READ_TIMEOUT_S seconds of
silence (Hypercorn's read_timeout), so idle connections cannot hold the server; uvicorn
has no timeout for a request whose headers never finish, and its concurrency limit
counts such connections, so 200 of them made every real request get 503. A deployment
facing the internet still belongs behind a reverse proxy (nginx, a cloud load balancer)
that buffers requests and limits connections per client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import sys
from pathlib import Path

import numpy as np

from jaxmnist import cli
from jaxmnist.messages import one_line

MAX_BODY = 2 * 1024 * 1024
MAX_JSON_DEPTH = 4  # {"pixels": [[...]]} is 3 deep; deeper is refused before parsing
READ_TIMEOUT_S = 5  # a connection silent this long is closed (headers or body unfinished)
MAX_HEADER_BYTES = 16 * 1024
MAX_PIXELS = 16_000_000  # decoded size cap for uploaded images (a 4000x4000 photo)
WEB = Path(__file__).with_name("web")
IMAGE_TYPES = ("image/png", "image/jpeg")


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m jaxmnist.serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_checkpoint_args(parser)
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000)
    return parser.parse_args(argv)


def json_depth(body: bytes) -> int:
    """How deep `body`'s arrays and objects nest, counted on the bytes (strings blanked
    out) without parsing: linear in the body, whatever it holds."""
    blanked = re.sub(rb'"(?:[^"\\]|\\.)*"', b'""', body)
    b = np.frombuffer(blanked, np.uint8)
    step = np.isin(b, (ord("["), ord("{"))).astype(np.int64) - np.isin(b, (ord("]"), ord("}")))
    return int(np.cumsum(step).max(initial=0))


def pixels_from_json(body: bytes) -> np.ndarray:
    """(28, 28) uint8 from `{"pixels": [[...]]}`; BadRequest says what is wrong."""
    if json_depth(body) > MAX_JSON_DEPTH:
        raise BadRequest(400, f"JSON nested deeper than {MAX_JSON_DEPTH} levels; expected "
                              '{"pixels": [[28 rows of 28 values 0-255]]}')
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise BadRequest(400, f"malformed JSON: {one_line(exc)}") from None
    if not isinstance(obj, dict) or "pixels" not in obj:
        raise BadRequest(422, 'expected a JSON object {"pixels": [[28 rows of 28 values 0-255]]}')
    rows = obj["pixels"]
    if not (isinstance(rows, list) and len(rows) == 28
            and all(isinstance(r, list) and len(r) == 28 for r in rows)):
        shape = _shape_of(rows)
        raise BadRequest(422, f"pixels must be 28 rows of 28 values, got shape {shape}")
    flat = [v for r in rows for v in r]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in flat):
        raise BadRequest(422, "pixels must be numbers 0-255")
    if not all(math.isfinite(v) and 0 <= v <= 255 for v in flat):
        raise BadRequest(422, "pixel values must lie in 0-255")
    return np.rint(np.asarray(flat, np.float64)).astype(np.uint8).reshape(28, 28)


def _shape_of(x) -> str:
    dims = []
    while isinstance(x, list):
        dims.append(len(x))
        if not x:
            break
        x = x[0]
    return "(" + ", ".join(map(str, dims)) + ")" if dims else type(x).__name__


def image_from_bytes(body: bytes) -> np.ndarray:
    from jaxmnist.use import preprocess

    try:
        return preprocess.from_bytes(body, max_pixels=MAX_PIXELS)
    except preprocess.NotAnImage as exc:
        raise BadRequest(400, str(exc)) from None
    except preprocess.NoInk as exc:
        raise BadRequest(422, str(exc)) from None


def answer(log_probs_fn, image: np.ndarray) -> dict:
    lp = np.asarray(log_probs_fn(image[None, :, :, None]))[0]
    probs = np.exp(lp.astype(np.float64))
    return {"prediction": int(np.argmax(lp)), "probabilities": probs.tolist(),
            "input": image.astype(int).tolist()}


def create_app(log_probs_fn, info: dict | None = None):
    """The Starlette app around `log_probs_fn` (uint8 (1, 28, 28, 1) -> (1, 10))."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import ClientDisconnect
    from starlette.responses import FileResponse, JSONResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    async def read_body(request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise BadRequest(400, "bad Content-Length")
            if int(declared) > MAX_BODY:
                raise BadRequest(413, f"body of {declared} bytes exceeds the {MAX_BODY}-byte limit")
        chunks, size = [], 0
        async for chunk in request.stream():  # chunked uploads have no Content-Length
            size += len(chunk)
            if size > MAX_BODY:
                raise BadRequest(413, f"body exceeds the {MAX_BODY}-byte limit")
            chunks.append(chunk)
        return b"".join(chunks)

    async def predict(request):
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        try:
            if ctype not in IMAGE_TYPES + ("application/json",):
                raise BadRequest(415, f"Content-Type must be {', '.join(IMAGE_TYPES)} or "
                                      f"application/json, got {ctype or 'none'}")
            body = await read_body(request)
            if not body:
                raise BadRequest(400, "empty body")
            if ctype == "application/json":
                image = pixels_from_json(body)
            else:
                image = await run_in_threadpool(image_from_bytes, body)
        except BadRequest as exc:
            return error(exc.status, str(exc))
        except ClientDisconnect:
            return error(400, "client disconnected")
        except Exception as exc:  # noqa: BLE001 - a body no parser foresaw is still the client's
            return error(400, f"unusable body: {one_line(exc)}")
        return JSONResponse(await run_in_threadpool(answer, log_probs_fn, image))

    async def index(request):
        return FileResponse(WEB / "index.html", media_type="text/html")

    async def model_info(request):
        return JSONResponse(info or {})

    routes = [
        Route("/", index),
        Route("/predict", predict, methods=["POST"]),
        Route("/info", model_info),
        Mount("/static", StaticFiles(directory=WEB), name="static"),
    ]
    return Starlette(routes=routes)


def app_for_workdir(workdir: str, epoch: int | None = None, best: bool = False, model: int = 0):
    """Loads the checkpoint, compiles it for batch 1, and returns (app, Model)."""
    from jaxmnist.use import inference

    net = inference.load(workdir, epoch, best, model, batch=1)
    net.warm_up()
    info = {"arch": net.arch, "epoch": net.epoch, "params": net.params_count,
            "test_accuracy": net.test_accuracy}
    return create_app(net.log_probs, info), net


def server_config(host: str, port: int):
    """Hypercorn's settings: silent connections closed after READ_TIMEOUT_S, headers
    bounded, idle keep-alive connections closed after 5 s, its access log off."""
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"]
    config.read_timeout = READ_TIMEOUT_S
    config.keep_alive_timeout = 5
    config.h11_max_incomplete_size = MAX_HEADER_BYTES
    config.backlog = 1024
    config.accesslog = None
    config.loglevel = "WARNING"  # its start-up line repeats ours
    return config


def run_server(app, host: str, port: int, stop=None) -> None:
    """Serves `app` until `stop()` (an async function) returns, or Ctrl-C."""
    from hypercorn.asyncio import serve as hypercorn_serve

    async def main():
        forever = asyncio.Event()
        await hypercorn_serve(app, server_config(host, port), shutdown_trigger=stop or forever.wait)

    asyncio.run(main())


@cli.main_wrapper
def main(argv=None):
    args = parse_args(argv)
    cli.require_extra("serve", "starlette", "hypercorn", "flatbuffers")
    app, net = app_for_workdir(args.workdir, args.epoch, args.best, args.model)
    print(f"serving {net.arch} epoch {net.epoch} on http://{args.host}:{args.port}/",
          file=sys.stderr)
    try:
        run_server(app, args.host, args.port)
    except KeyboardInterrupt:
        pass
