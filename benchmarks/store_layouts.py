"""Store layouts: one file per (image, level) against tar shards per level, on moto's S3 and on the local disk.

For each backend and layout, from the same real-photo demo crops (sources on the local disk):

* **compress**: ``compress_job`` on a local Ray with ``--num-cpus`` CPUs (started once, warm) into a fresh
  store: wall seconds, objects in the store's level folders, and on S3 the HTTP requests the moto server
  answered, by kind (PUT, GET, LIST, ...);
* **evaluation reads**: ``decode_test_level`` (what evaluation does before scoring: read and decode every test
  image of a level, in relpath order) for every level, in this process: wall seconds and requests;
* **training reads**: one epoch of ``ImageSamples`` over the train split at one level in a seeded shuffled order
  (a trial's data loader), read in place (one ranged read per image); and **staged**, as trials now do: the shards
  copied whole to local disk first (:mod:`lossyvision.staging`), then the epoch: wall seconds and requests.

Runs alternate the layouts (files, shards, shards, files, ...) so that a drifting load weighs on both, and each
repeat compresses into a new store. The headline is the median of the repeats, as ratios shards ÷ files.

moto is a Python server in this process: a request costs it about a millisecond of CPU on the same 2 cores, far
less latency than a real object store (tens of ms for a PUT), so the S3 time ratios here understate what request
counts cost on a real bucket; the request counts are exact.

    .venv/bin/python benchmarks/store_layouts.py --repeats 3 --json benchmarks/results/store-layouts.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform as std_platform
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "platform"))
sys.path.insert(0, str(REPO / "tests"))

BUCKET = "lv-bench"


class RequestCounter(logging.Handler):
    """Counts the requests moto's server (werkzeug) logs: PUT, GET, HEAD, LIST (a GET of a bucket), ..."""

    _LINE = re.compile(r'"(GET|PUT|POST|HEAD|DELETE) (\S+) HTTP')
    _COLOUR = re.compile(r"\x1b\[[0-9;]*m")  # werkzeug colours every status but 200 (206: a ranged GET)

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.counts: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        m = self._LINE.search(self._COLOUR.sub("", record.getMessage()))
        if m:
            method, path = m.groups()
            if method == "GET" and "list-type=" in path:
                method = "LIST"
            self.counts[method] += 1

    def take(self) -> dict[str, int]:
        out, self.counts = dict(self.counts), Counter()
        return out


def start_moto() -> RequestCounter:
    from moto.server import ThreadedMotoServer
    from ray_head import free_port

    counter = RequestCounter()
    log = logging.getLogger("werkzeug")
    log.setLevel(logging.INFO)
    log.propagate = False
    log.handlers[:] = [counter]
    port = free_port()
    ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False).start()
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"})
    import s3fs

    s3fs.S3FileSystem().mkdir(BUCKET)
    return counter


def objects(store_uri: str) -> int:
    from lossyvision.store import filesystem

    fs, base = filesystem(store_uri)
    fs.invalidate_cache()
    return sum(1 for p in fs.find(base) if "/jpegxl-" in p and "/.tmp-" not in p)


def sweep_for(root: str, store_uri: str, levels: list[float], tmp: Path):
    from lossyvision.spec import parse_sweep

    return parse_sweep({
        "name": "bench", "dataset": {"kind": "imagefolder", "root": root}, "codec": {"name": "jpegxl", "effort": 1},
        "train_levels": levels, "test_levels": levels, "store": store_uri, "output": str(tmp / "out"),
        "models": [{"name": "m", "task": "classification", "arch": "resnet10t"}]})


def one_run(backend: str, layout: str, root: str, levels: list[float], args, counter: RequestCounter,
            tmp: Path, n: int) -> dict:
    from lossyvision.codecs import create_codec
    from lossyvision.data import ImageSamples
    from lossyvision.manifest import read_manifest
    from lossyvision.runners.compress import compress_job
    from lossyvision.sweep.evaluate import decode_test_level
    from lossyvision.sweep.trials import images_of, split_images

    store_uri = (f"s3://{BUCKET}/{layout}-{n}" if backend == "s3" else str(tmp / f"{layout}-{n}"))
    counter.take()
    t0 = time.perf_counter()
    job = compress_job(root, store_uri, levels=levels, codec_options={"effort": args.effort}, layout=layout,
                       shard_size=args.shard_size, keep_ray=True, log=lambda m: None)
    compress_s = time.perf_counter() - t0
    compress_requests = counter.take()
    assert (job.manifest.status == "ok").all(), job.manifest[job.manifest.status != "ok"]
    n_objects = objects(store_uri)
    manifest = read_manifest(store_uri)
    sweep = sweep_for(root, store_uri, levels, tmp)
    counter.take()
    t0 = time.perf_counter()
    decoded = [len(decode_test_level(sweep, manifest, level, "jpegxl")) for level in levels]
    eval_s = time.perf_counter() - t0
    eval_requests = counter.take()
    rows, reader = split_images(sweep, manifest, "train", levels[-1])
    images = images_of(sweep, rows, reader, "train")
    samples = ImageSamples(images.uris, images.targets, decode=create_codec("jpegxl").decode)
    order = __import__("numpy").random.default_rng(n).permutation(len(samples))
    counter.take()
    t0 = time.perf_counter()
    for i in order:
        samples[int(i)]
    train_s = time.perf_counter() - t0
    train_requests = counter.take()
    # What a trial does now: stage the shards on local disk (one streamed read each), then its epoch.
    from lossyvision.staging import stage_shards

    t0 = time.perf_counter()
    staged = stage_shards(images.uris, str(tmp / f"stage-{layout}-{n}"), max_bytes=8 * 10**9)
    local = ImageSamples(staged.uris, images.targets, decode=create_codec("jpegxl").decode)
    for i in order:
        local[int(i)]
    staged_s = time.perf_counter() - t0
    staged_requests = counter.take()
    return {"backend": backend, "layout": layout, "repeat": n, "rows": len(job.manifest), "objects": n_objects,
            "compress_s": round(compress_s, 3), "eval_read_s": round(eval_s, 3), "train_read_s": round(train_s, 3),
            "train_staged_s": round(staged_s, 3), "train_shards_staged": staged.staged,
            "test_images_per_level": decoded[0], "train_images": len(samples),
            "requests": {"compress": compress_requests, "eval": eval_requests, "train": train_requests,
                         "train_staged": staged_requests}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train-per-class", type=int, default=40)
    ap.add_argument("--test-per-class", type=int, default=40)
    ap.add_argument("--size", type=int, default=128, help="crop size in pixels")
    ap.add_argument("--levels", default="0,1,4")
    ap.add_argument("--effort", type=int, default=1)
    ap.add_argument("--shard-size", type=int, default=256 * 10**6)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--num-cpus", type=int, default=2)
    ap.add_argument("--backends", default="s3,local")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    levels = [float(x) for x in args.levels.split(",")]

    counter = start_moto()
    from lossyvision.demo import build_demo_dataset
    from lossyvision.runners.cluster import init_ray

    # Ray's workers import this checkout's lossyvision, as this process does.
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO / "platform"), *filter(None, [os.environ.get("PYTHONPATH")])])
    tmp = Path(tempfile.mkdtemp(prefix="lv-layouts-"))
    root = str(tmp / "demo")
    build_demo_dataset(root, train_per_class=args.train_per_class, test_per_class=args.test_per_class,
                       image_size=args.size)
    init_ray(num_cpus=args.num_cpus)
    warm = compress_job_warmup(root, tmp, levels, args)
    runs = []
    for backend in args.backends.split(","):
        for n in range(args.repeats):
            for layout in (("files", "shards") if n % 2 == 0 else ("shards", "files")):
                run = one_run(backend, layout, root, levels, args, counter, tmp, n)
                runs.append(run)
                print(json.dumps(run), flush=True)
    summary = summarize(runs)
    for line in summary["lines"]:
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps({
            "args": vars(args), "machine": {"python": std_platform.python_version(), "cpus": os.cpu_count(),
                                            "platform": std_platform.platform()},
            "warmup_s": warm, "runs": runs, "summary": summary["table"]}, indent=1))


def compress_job_warmup(root: str, tmp: Path, levels: list[float], args) -> float:
    """One untimed job first: Ray Data's start and the workers' imports are paid once, by neither layout."""
    from lossyvision.runners.compress import compress_job

    t0 = time.perf_counter()
    compress_job(root, str(tmp / "warmup"), levels=levels[:1], codec_options={"effort": args.effort},
                 keep_ray=True, log=lambda m: None)
    return round(time.perf_counter() - t0, 2)


def summarize(runs: list[dict]) -> dict:
    table, lines = [], ["| backend | layout | objects | compress s | eval reads s | train reads s | "
                        "staged + train reads s | requests (compress / eval / train / staged train) |",
                        "|---|---|---|---|---|---|---|---|"]
    for backend in sorted({r["backend"] for r in runs}):
        med = {}
        for layout in ("files", "shards"):
            rs = [r for r in runs if r["backend"] == backend and r["layout"] == layout]
            m = {k: statistics.median(r[k] for r in rs) for k in ("objects", "compress_s", "eval_read_s",
                                                                   "train_read_s", "train_staged_s")}
            req = {phase: sum(rs[0]["requests"][phase].values())
                   for phase in ("compress", "eval", "train", "train_staged")}
            med[layout] = {**m, "requests": req, "requests_by_kind": rs[0]["requests"]}
            table.append({"backend": backend, "layout": layout, **med[layout]})
            lines.append(f"| {backend} | {layout} | {m['objects']:.0f} | {m['compress_s']:.2f} | "
                         f"{m['eval_read_s']:.2f} | {m['train_read_s']:.2f} | {m['train_staged_s']:.2f} | "
                         f"{req['compress']} / {req['eval']} / {req['train']} / {req['train_staged']} |")
        f, s = med["files"], med["shards"]
        ratio = {k: s[k] / f[k] for k in ("objects", "compress_s", "eval_read_s", "train_read_s", "train_staged_s")}
        table.append({"backend": backend, "layout": "shards / files", **ratio})
        lines.append(f"| {backend} | **shards ÷ files** | {ratio['objects']:.4f} | {ratio['compress_s']:.2f} | "
                     f"{ratio['eval_read_s']:.2f} | {ratio['train_read_s']:.2f} | {ratio['train_staged_s']:.2f} | |")
    return {"table": table, "lines": lines}


if __name__ == "__main__":
    main()
