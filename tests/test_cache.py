"""The decoded cache (``cache: exact`` / ``{max_side: N}``): same pixels, same order, same key, same trial.

Without Ray: the cache's files, its readers in DataLoader worker processes, shard order, the plan's
keys, the disk check, and one trial trained with and without ``cache: exact`` (equal weights and
predictions). tests/test_scale_ray.py runs whole sweeps (results.parquet equal).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from lossyvision.cache import (CachedSamples, DecodedCache, cache_bytes, cache_mode, cached_shape, cached_samples,
                               shrink, slot_shapes)


class Counting:
    """ImageSamples' interface over arrays in memory, counting decodes."""

    def __init__(self, images, order=None):
        self.images = images
        self.targets = list(range(len(images)))
        self.decodes = 0
        self.order = order

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        self.decodes += 1
        return self.images[i].copy(), self.targets[i]

    def train_sampler(self, seed):
        return None if self.order is None else list(np.random.default_rng(seed).permutation(len(self.images)))


def _images(n=5, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (int(h), int(w), 3), dtype=np.uint8)
            for h, w in zip(rng.integers(5, 40, n), rng.integers(5, 40, n))]


def test_exact_cache_returns_the_decoded_pixels_and_decodes_each_image_once(tmp_path):
    images = _images()
    samples = Counting(images)
    cached = cached_samples(samples, {"mode": "exact"}, [a.shape[0] for a in images], [a.shape[1] for a in images],
                            str(tmp_path / "c"))
    for _ in range(3):  # three epochs
        for i in range(len(images)):
            rgb, target = cached[i]
            assert rgb.dtype == np.uint8 and np.array_equal(rgb, images[i]) and target == i
    assert samples.decodes == len(images)
    assert cached.cache.filled() == len(images)
    assert sorted(os.listdir(tmp_path / "c")) == ["filled.u8", "index.npz", "pixels.u8", "stored.i32"]
    assert os.path.getsize(tmp_path / "c" / "pixels.u8") == sum(a.size for a in images)


def test_a_cache_is_filled_by_dataloader_worker_processes_and_read_back_by_another(tmp_path):
    from torch.utils.data import DataLoader

    images = _images(8)
    cached = cached_samples(Counting(images), {"mode": "exact"}, [a.shape[0] for a in images],
                            [a.shape[1] for a in images], str(tmp_path / "c"))
    loader = DataLoader(cached, batch_size=None, num_workers=2, multiprocessing_context="fork")
    for i, (rgb, _) in enumerate(loader):
        assert np.array_equal(rgb.numpy(), images[i])
    fresh = DecodedCache(str(tmp_path / "c"))  # another process's view: what the workers wrote
    assert fresh.filled() == 8 and all(np.array_equal(fresh.get(i), images[i]) for i in range(8))


def test_an_image_whose_size_the_manifest_got_wrong_is_decoded_every_time(tmp_path):
    images = _images(3)
    heights = [a.shape[0] for a in images]
    widths = [a.shape[1] for a in images]
    widths[1] += 1  # the manifest's size is off: the slot does not fit
    heights[2] = None  # unknown size: no slot
    samples = Counting(images)
    cached = cached_samples(samples, {"mode": "exact"}, heights, widths, str(tmp_path / "c"))
    for _ in range(2):
        assert all(np.array_equal(cached[i][0], images[i]) for i in range(3))
    assert samples.decodes == 2 + 2 + 1 and cached.cache.filled() == 1


def test_a_rotated_image_fills_its_slot_transposed(tmp_path):
    img = _images(1)[0]
    cache = DecodedCache.create(str(tmp_path / "c"), slot_shapes([img.shape[1]], [img.shape[0]], None))
    assert cache.put(0, img) and np.array_equal(cache.get(0), img)


def test_max_side_shrinks_the_longer_side_and_never_enlarges(tmp_path):
    assert cached_shape(384, 512, 256) == (192, 256) and cached_shape(100, 80, 256) == (100, 80)
    assert cached_shape(1000, 3, 100) == (100, 1)
    big = np.random.default_rng(1).integers(0, 256, (60, 90, 3), dtype=np.uint8)
    samples = Counting([big])
    cached = cached_samples(samples, {"mode": "max_side", "max_side": 30}, [60], [90], str(tmp_path / "c"))
    first, again = cached[0][0], cached[0][0]
    assert first.shape == (20, 30, 3) and np.array_equal(first, again) and np.array_equal(first, shrink(big, 30))
    assert samples.decodes == 1
    assert cache_bytes([60], [90], 30) < cache_bytes([60], [90], None) == 60 * 90 * 3 + 45


def test_the_cache_keeps_the_samples_training_order():
    samples = Counting(_images(6), order="seeded")
    cache_free = samples.train_sampler(7)
    cached = CachedSamples(samples, _empty_cache(6))
    assert list(cached.train_sampler(7)) == list(cache_free)
    assert CachedSamples(Counting(_images(6)), _empty_cache(6)).train_sampler(7) is None


def _empty_cache(n):
    import tempfile

    return DecodedCache.create(tempfile.mkdtemp(prefix="lv-test-cache-"), np.zeros((n, 3), dtype=np.int64))


def test_shard_order_fills_the_cache_as_it_streams_and_reads_it_in_the_same_order(tmp_path):
    """data_order shards: epoch 1 streams shard by shard and fills the cache; epoch 2's order is its own
    seed's, as without a cache, and reads no shard."""
    import io
    import tarfile

    from lossyvision import store
    from lossyvision.data import ImageSamples
    from lossyvision.tasks.training import make_loader

    images = _images(10, seed=3)
    uris = []
    for s in range(2):
        path = tmp_path / f"shard-{s}.tar"
        with tarfile.open(path, "w") as tar:
            for k in range(5):
                data = images[5 * s + k].tobytes()
                info = tarfile.TarInfo(f"{k}.raw")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        with tarfile.open(path) as tar:
            uris += [store.range_uri(str(path), m.offset_data, m.size) for m in tar.getmembers()]
    shapes = {len(a.tobytes()): a.shape for a in images}
    reads = []

    def read(uri):
        reads.append(uri)
        return store.read_bytes(uri)

    def decode(data):
        return np.frombuffer(data, dtype=np.uint8).reshape(shapes[len(data)])

    def order(dataset, epoch):
        loader = make_loader(dataset, 3, lambda b: [t for _, t in b], shuffle=True, seed=epoch)
        return [t for batch in loader for t in batch]

    plain = ImageSamples(uris, list(range(10)), decode, order="shards", shuffle_buffer=3, read=read)
    cached = cached_samples(ImageSamples(uris, list(range(10)), decode, order="shards", shuffle_buffer=3, read=read),
                            {"mode": "exact"}, [a.shape[0] for a in images], [a.shape[1] for a in images],
                            str(tmp_path / "c"))
    want1, want2 = order(plain, 1), order(plain, 2)
    reads.clear()
    assert order(cached, 1) == want1 and len(reads) == 10  # streamed once, in shard order
    assert order(cached, 2) == want2 and len(reads) == 10  # from the cache: no read
    assert cached.cache.filled() == 10


def test_cache_mode_reads_the_sweep_files_forms():
    from lossyvision.spec import CacheSize

    assert cache_mode(None) is None and cache_mode("exact") == {"mode": "exact"}
    assert cache_mode(CacheSize(max_side=256)) == {"mode": "max_side", "max_side": 256}
    assert cache_mode({"max_side": 64}) == {"mode": "max_side", "max_side": 64}


# --- the sweep file, the plan, a trial -----------------------------------------------------------------
@pytest.fixture(scope="module")
def compressed(tmp_path_factory):
    """A tiny demo dataset compressed at two levels (no Ray): (root, store)."""
    from lossyvision import compress
    from lossyvision.datasets import create_dataset
    from lossyvision.demo import build_demo_dataset

    base = tmp_path_factory.mktemp("cache")
    root = base / "demo"
    build_demo_dataset(str(root), train_per_class=3, test_per_class=1, image_size=32)
    reader = create_dataset("imagefolder", str(root))
    options = compress.CompressOptions(codec="jpegxl", codec_options={"effort": 1}, levels=(0.0, 4.0))
    job = compress.run_job(reader.records(), str(root), str(base / "store"), options, compress.execute_serially)
    assert (job.manifest.status == "ok").all()
    return str(root), str(base / "store")


def _sweep(compressed, output, model_extra=None, resources=None):
    from lossyvision.spec import parse_sweep

    root, store_dir = compressed
    model = {"name": "r10", "task": "classification", "arch": "resnet10t", "epochs": 2, "lr": 0.003,
             "batch_size": 4, "image_size": 32, "options": {"train_crop": "random_resized_crop"},
             **(model_extra or {})}
    return parse_sweep({"name": "c", "dataset": {"kind": "imagefolder", "root": root},
                        "codec": {"name": "jpegxl", "effort": 1}, "train_levels": [0, 4], "test_levels": [4],
                        "models": [model], "store": store_dir, "output": str(output),
                        "resources": resources or {}})


def test_exact_keeps_every_key_max_side_and_workers_change_them(compressed, tmp_path):
    from lossyvision.sweep.plan import plan
    from lossyvision.sweep.trials import read_manifest

    base = _sweep(compressed, tmp_path / "o")
    manifest = read_manifest(base)
    keys = lambda s: [t.key for t in plan(s, manifest).trials] + [c.key for c in plan(s, manifest).cells]  # noqa: E731
    assert keys(_sweep(compressed, tmp_path / "o", {"cache": "exact"})) == keys(base)
    assert keys(_sweep(compressed, tmp_path / "o", resources={"trial": {"workers": 1}})) == keys(base)
    shrunk = keys(_sweep(compressed, tmp_path / "o", {"cache": {"max_side": 16}}))
    assert not set(shrunk) & set(keys(base))
    assert shrunk != keys(_sweep(compressed, tmp_path / "o", {"cache": {"max_side": 24}}))
    two = keys(_sweep(compressed, tmp_path / "o", resources={"trial": {"workers": 2}}))
    assert not set(two) & set(keys(base))


def test_the_sweep_file_refuses_a_bad_cache_in_one_line(compressed, tmp_path):
    from lossyvision.spec import SpecError

    for bad, says in (("fast", "cache"), ({"max_side": 4}, "max_side"), ({"max_sides": 64}, "max_sides")):
        with pytest.raises(SpecError, match=says):
            _sweep(compressed, tmp_path / "o", {"cache": bad})



def test_what_a_task_does_not_support_is_refused_before_anything_runs(compressed, tmp_path):
    """A shrunk cache and data-parallel workers are the task class's declarations, checked by preflight
    (parsing cannot load the task registry: it would import torch)."""
    from lossyvision.preflight import model_problems
    from lossyvision.tasks import TASKS

    seg = {"task": "segmentation", "arch": "segformer-tiny", "options": {}}
    problems = model_problems(_sweep(compressed, tmp_path / "o", {**seg, "cache": {"max_side": 64}}))
    assert problems == ["models.0.cache: max_side shrinks the images but not a segmentation task's targets; use "
                        "cache: exact (tasks whose targets survive it: classification)"]
    problems = model_problems(_sweep(compressed, tmp_path / "o", {**seg, "cache": "exact", "batch_size": 4},
                                     resources={"trial": {"workers": 2}}))
    assert problems == ["models.0.task: resources.trial.workers: 2 trains data-parallel, which the segmentation "
                        "task does not (tasks that do: classification); set workers: 1"]
    assert TASKS.get("classification").supports_shrunk_cache and TASKS.get("classification").supports_workers
    assert not model_problems(_sweep(compressed, tmp_path / "o", {"cache": {"max_side": 24}},
                                     resources={"trial": {"workers": 2}}))


def test_the_disk_need_is_checked_against_resources_trial_and_shown_by_sweep_plan(compressed, tmp_path):
    from lossyvision.spec import SpecError
    from lossyvision.sweep.preview import preview, render_preview
    from lossyvision.sweep.resources import check_cache_disk
    from lossyvision.sweep.trials import read_manifest

    fits = _sweep(compressed, tmp_path / "o", {"cache": "exact"})
    manifest = read_manifest(fits)
    check_cache_disk(fits, manifest)
    small = _sweep(compressed, tmp_path / "o", {"cache": "exact"}, {"trial": {"cache_bytes": 1000}})
    with pytest.raises(SpecError, match=r"models.r10.cache: .*more than resources.trial.cache_bytes \(1.0 kB\)"):
        check_cache_disk(small)  # from the store's manifest, before anything runs
    text = "\n".join(render_preview(preview(fits, sample=2)))
    n = int(((manifest.split == "train") & (manifest.level == 0)).sum())
    assert "cache: r10: exact, up to" in text and n * 32 * 32 * 3 > 1000


def test_a_trial_with_cache_exact_trains_the_same_weights_and_records_the_cache(compressed, tmp_path):
    import torch

    from lossyvision.sweep.evaluate import decode_test_level, evaluate_trial
    from lossyvision.sweep.plan import plan
    from lossyvision.sweep.trials import META_FILE, checkpoint_dir, read_manifest, run_trial

    weights, scores, metas = [], [], []
    for extra in ({}, {"cache": "exact"}):
        sweep = _sweep(compressed, tmp_path / ("cached" if extra else "plain"), extra)
        manifest = read_manifest(sweep)
        grid = plan(sweep, manifest)
        trial = grid.trials[1]  # level 4: a lossy decode
        metas.append(run_trial(sweep, trial, sweep.output, manifest=manifest))
        weights.append(torch.load(os.path.join(checkpoint_dir(sweep.output, trial.key), "model.pt"),
                                  weights_only=True))
        scores.append(evaluate_trial(sweep, grid.cells_of(trial)[0], sweep.output,
                                     decode_test_level(sweep, manifest, 4.0)).metrics())
    assert metas[0]["key"] == metas[1]["key"]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert scores[0] == scores[1]
    assert [h["loss"] for h in metas[0]["history"]] == [h["loss"] for h in metas[1]["history"]]
    assert metas[0]["cache"] is None and metas[0]["workers"] == 1
    assert metas[1]["cache"] == {"mode": "exact"} and metas[1]["cache_images"] == metas[1]["n_train_images"]
    on_disk = json.loads(open(os.path.join(checkpoint_dir(str(tmp_path / "cached"), metas[1]["key"]), META_FILE)).read())
    assert on_disk["cache"] == {"mode": "exact"}
