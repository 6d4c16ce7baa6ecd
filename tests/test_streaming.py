"""Shard order without Ray: the epoch order (shards shuffled, members in file order, a shuffle buffer),
its seeding and resume property, the block reader's bytes and requests on moto's S3, worker processes,
and the sweep file's ``data_order``."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

from lossyvision import shards, store
from lossyvision.data import ImageSamples
from lossyvision.streaming import BlockReader, ShardOrderSampler, blocks_spanned, shard_groups, shard_order
from lossyvision.tasks.training import make_loader

sys.path.insert(0, str(Path(__file__).parent))


def sharded_uris(base: str, sizes=(40, 25, 35), member=lambda s, i: 300 + 37 * i) -> list[str]:
    """Range URIs of ``len(sizes)`` shards written like a store's (``sizes[s]`` members each), listed
    in relpath order as a trial lists them: shard by shard."""
    uris = []
    for s, n in enumerate(sizes):
        writer = shards.ShardWriter(base, f"jpegxl-1/shard-r1-{s}.tar")
        paths = [writer.add(f"train/c/{s}-{i:03d}.jxl", bytes([s, i % 256]) * (member(s, i) // 2)) for i in range(n)]
        writer.commit()
        uris += [store.range_uri(store.join(base, p.split("#")[0]), *shards.parse_member_path(p)[1:]) for p in paths]
    return uris


def shard_of(uris, i) -> str:
    return store.parse_range_uri(uris[i])[0]


def offset_of(uris, i) -> int:
    return store.parse_range_uri(uris[i])[1]


# --- the order -----------------------------------------------------------------------------------
def test_an_epoch_is_a_permutation_seeded_by_the_epoch_alone(tmp_path):
    uris = sharded_uris(str(tmp_path))
    groups = shard_groups(uris)
    assert [len(g) for g in groups] == [40, 25, 35]
    orders = {seed: list(ShardOrderSampler(groups, 16, seed)) for seed in (7000 + 1, 7000 + 2, 7000 + 3)}
    for order in orders.values():
        assert sorted(order) == list(range(100)) and len(ShardOrderSampler(groups, 16, 0)) == 100
    assert orders[7001] == list(ShardOrderSampler(groups, 16, 7001))  # same seed and epoch, same order
    assert orders[7001] != orders[7002] != orders[7003]  # another epoch, another order
    # resume: epoch 3 built fresh is epoch 3 of the run that went through epochs 1 and 2 first
    samples = ImageSamples(uris, list(range(100)), decode=lambda b: b, order="shards", shuffle_buffer=16)
    run = [list(make_loader(samples, 10, lambda b: [t for _, t in b], shuffle=True, seed=7000 + e)) for e in (1, 2, 3)]
    fresh = ImageSamples(uris, list(range(100)), decode=lambda b: b, order="shards", shuffle_buffer=16)
    third = list(make_loader(fresh, 10, lambda b: [t for _, t in b], shuffle=True, seed=7003))
    assert third == run[2] and sum(third, []) == orders[7003]  # every task's loader gets the shard order


def test_buffer_one_reads_shard_by_shard_in_file_order_and_a_large_buffer_mixes(tmp_path):
    uris = sharded_uris(str(tmp_path))
    rng = np.random.default_rng(3)
    listed = [uris[i] for i in rng.permutation(len(uris))]  # listing order does not matter: file order does
    groups = shard_groups(listed)
    order = shard_order(groups, 1, seed=5)
    runs = [shard_of(listed, order[0])]
    for i in order[1:]:
        if shard_of(listed, i) != runs[-1]:
            runs.append(shard_of(listed, i))
    assert len(runs) == 3 and len(set(runs)) == 3  # each shard once, whole
    for shard in runs:
        offsets = [offset_of(listed, i) for i in order if shard_of(listed, i) == shard]
        assert offsets == sorted(offsets)
    shard_orders = {tuple(dict.fromkeys(shard_of(listed, i) for i in shard_order(groups, 1, s))) for s in range(12)}
    assert len(shard_orders) > 1  # the seed shuffles the shards

    mixed = shard_order(groups, 1000, seed=5)  # a buffer of everything: a full shuffle
    switches = sum(shard_of(listed, a) != shard_of(listed, b) for a, b in zip(mixed, mixed[1:]))
    assert switches > 30 and sorted(mixed) == list(range(100))
    some = shard_order(groups, 8, seed=5)  # a small buffer: local mixing, shards still mostly apart
    assert 3 < sum(shard_of(listed, a) != shard_of(listed, b) for a, b in zip(some, some[1:])) < switches
    assert list(some) != sorted(some, key=lambda i: (runs.index(shard_of(listed, i)), offset_of(listed, i)))


def test_staged_copies_keep_the_order_and_files_are_refused(tmp_path):
    uris = sharded_uris(str(tmp_path / "a"))
    moved = [u.replace(str(tmp_path / "a"), "s3://bucket/elsewhere") for u in uris]  # other names, same places
    assert list(shard_order(shard_groups(uris), 10, 9)) == list(shard_order(shard_groups(moved), 10, 9))
    with pytest.raises(ValueError, match="data_order shards reads a sharded store, but .*x.jxl is a file"):
        ImageSamples([uris[0], str(tmp_path / "x.jxl")], [0, 1], order="shards")
    with pytest.raises(ValueError, match="unknown data order 'sideways'"):
        ImageSamples(uris, [0] * len(uris), order="sideways")
    assert ImageSamples(uris, [0] * len(uris)).train_sampler(1) is None  # random: the loader's own shuffle


# --- the block reader ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def s3_server():
    from moto_s3 import moto_s3

    with moto_s3("lv-stream") as endpoint:
        yield endpoint


def test_block_reader_serves_an_epoch_from_few_gets_with_the_same_bytes(s3_server, monkeypatch, request):
    import s3fs

    uris = sharded_uris("s3://lv-stream/store", sizes=(150, 120), member=lambda s, i: 2000 + 97 * (i % 13))
    expected = [store.read_bytes(u) for u in uris]
    shard_sizes = [store.size(s) for s in {shard_of(uris, i) for i in range(len(uris))}]
    calls = []  # every ranged GET: s3fs's cat_file binds _cat_file when a filesystem is made
    real = s3fs.S3FileSystem._cat_file

    async def counted(self, path, start=None, end=None, **kw):
        calls.append((start, end))
        return await real(self, path, start=start, end=end, **kw)

    monkeypatch.setattr(s3fs.S3FileSystem, "_cat_file", counted)
    s3fs.S3FileSystem.clear_instance_cache()
    request.addfinalizer(s3fs.S3FileSystem.clear_instance_cache)  # later filesystems bind the real one
    block = 64 << 10
    reader = BlockReader(block, 4 * block)
    samples = ImageSamples(uris, list(range(len(uris))), decode=lambda b: b, order="shards", shuffle_buffer=20,
                           read=reader)
    for epoch in (1, 2):
        calls.clear()
        got = {t: data for batch in make_loader(samples, 8, list, shuffle=True, seed=epoch) for data, t in batch}
        assert [got[i] for i in range(len(uris))] == expected  # every member, the same bytes
        spanned = blocks_spanned(uris, block)
        assert sum(shard_sizes) / block < spanned <= sum(-(-n // block) for n in shard_sizes)
        assert spanned <= len(calls) <= spanned + 10, (len(calls), spanned)  # ~ a GET per block, not one per image
        assert len(calls) < len(uris) / 10
    assert reader.block_reads >= spanned and reader.range_reads <= 10
    calls.clear()
    direct = [BlockReader(block, 4 * block)(uris[i]) for i in (5, 200)]  # a fresh reader: one block each
    assert direct == [expected[5], expected[200]] and len(calls) == 2 and all(e - s == block for s, e in calls)
    copy = pickle.loads(pickle.dumps(reader))  # a worker's copy starts empty, with the same settings
    assert (copy.block_bytes, copy.max_blocks) == (reader.block_bytes, reader.max_blocks)
    assert not hasattr(copy, "_blocks")


def test_late_images_read_their_own_range_and_damage_is_named(s3_server):
    uris = sharded_uris("s3://lv-stream/late", sizes=(60,), member=lambda s, i: 3000)
    reader = BlockReader(16 << 10, 32 << 10)  # two blocks: about ten images
    for u in uris[:50]:
        reader(u)
    front = reader.block_reads
    assert reader(uris[0]) == store.read_bytes(uris[0])  # far behind the front: its range only
    assert (reader.block_reads, reader.range_reads) == (front, 1)
    reader.new_pass()  # the next epoch starts the shard again: blocks
    reader(uris[0])
    assert reader.block_reads == front + 1
    shard, offset, _ = store.parse_range_uri(uris[-1])
    with pytest.raises(store.DamagedFileError, match="is damaged"):
        BlockReader(16 << 10)(store.range_uri(shard, offset, 10**6))


def test_worker_processes_read_through_their_own_blocks(s3_server):
    uris = sharded_uris("s3://lv-stream/workers", sizes=(30, 30), member=lambda s, i: 1500)
    expected = [store.read_bytes(u) for u in uris]
    samples = ImageSamples(uris, list(range(60)), decode=lambda b: b, order="shards", shuffle_buffer=10,
                           read=BlockReader(8 << 10, 32 << 10))
    batches = list(make_loader(samples, 6, list, shuffle=True, num_workers=2, seed=11))
    assert sorted((t, data) for batch in batches for data, t in batch) == list(enumerate(expected))
    assert [t for batch in batches for _, t in batch] == list(ShardOrderSampler(shard_groups(uris), 10, 11))


# --- the sweep file ------------------------------------------------------------------------------
def test_shard_order_is_a_model_field_for_a_sharded_store(tmp_path):
    from test_sweep_files import base, text_of

    from lossyvision.spec import load_sweep

    (tmp_path / "data").mkdir()
    data = base(tmp_path)
    data["models"][0].update(data_order="shards", shuffle_buffer=250)
    data.update(compress={"layout": "shards"}, resources={"trial": {"read_block_bytes": "16MiB"}})
    (tmp_path / "sweep.yaml").write_text(text_of(data))
    sweep = load_sweep(tmp_path / "sweep.yaml")
    assert (sweep.models[0].data_order, sweep.models[0].shuffle_buffer) == ("shards", 250)
    assert (sweep.resources.trial.read_block_bytes, sweep.resources.trial.read_cache_bytes) == (16 << 20, 256 << 20)
    default = base(tmp_path)
    (tmp_path / "plain.yaml").write_text(text_of(default))
    plain = load_sweep(tmp_path / "plain.yaml")
    assert (plain.models[0].data_order, plain.models[0].shuffle_buffer) == ("random", 1000)
    from lossyvision.output import sweep_to_yaml

    (tmp_path / "copy.yaml").write_text(sweep_to_yaml(plain))  # OUTPUT/sweep.yaml reads back
    assert load_sweep(tmp_path / "copy.yaml").models == plain.models


def test_a_trial_reads_remote_shards_through_blocks_and_files_are_a_trial_error(tmp_path):
    from types import SimpleNamespace

    from lossyvision.spec import TrialResource
    from lossyvision.streaming import late_fraction
    from lossyvision.sweep.trials import TrialError, training_samples

    res = TrialResource()
    uris = [store.range_uri(f"s3://b/jpegxl-0/shard-{i % 3}.tar", 512 + 110_000 * (i // 3), 100_000) for i in range(30)]
    shard_model = SimpleNamespace(name="m", data_order="shards", shuffle_buffer=1000)
    samples, blocks = training_samples(shard_model, res, uris, [0] * 30, bytes)
    assert isinstance(samples.read, BlockReader) and samples.read.block_bytes == res.read_block_bytes
    assert samples.order == "shards" and blocks == 3  # 1.1 MB of each shard: one 32 MiB block each
    random_model = SimpleNamespace(name="m", data_order="random", shuffle_buffer=1000)
    assert training_samples(random_model, res, uris, [0] * 30, bytes)[0].train_sampler(1) is None
    with pytest.raises(TrialError, match="model 'm': data_order shards reads a sharded store"):
        training_samples(shard_model, res, [str(tmp_path / "a.jxl")], [0], bytes)
    # 100 kB images, 1000 in the buffer: 256 MiB of 32 MiB blocks keep ~2,300 of them, 12 % read late
    assert 0.08 < late_fraction(uris, 1000, 32 << 20, 256 << 20) < 0.12
    assert late_fraction(uris, 1000, 32 << 20, 1 << 30) < 0.01
