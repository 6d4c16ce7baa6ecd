"""Hostile files in a dataset and in a store: FIFOs, sockets, links outside the root, animated
images, unsupported types, CMYK level 0, planted ``../`` manifest paths, a full disk.

Jobs run with the serial executor (no Ray); every test that could hang has a timeout.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))

from badimages import cmyk_jpeg, jpeg_bytes, photo  # noqa: E402
from lossyvision import compress, manifest, store  # noqa: E402
from lossyvision.datasets import create_dataset  # noqa: E402

FAST = {"effort": 1}


def dataset(root: Path) -> Path:
    """A tiny imagefolder: train/cat/{a,b}.jpg."""
    d = root / "train" / "cat"
    d.mkdir(parents=True)
    (d / "a.jpg").write_bytes(jpeg_bytes(photo("chelsea", (48, 32))))
    (d / "b.jpg").write_bytes(jpeg_bytes(photo("coffee", (48, 32))))
    return root


def run(root: Path, out: Path, levels=(0.0, 2.0), **opts) -> compress.JobResult:
    reader = create_dataset("imagefolder", str(root), **opts.pop("dataset_options", {}))
    options = compress.CompressOptions(codec_options=FAST, levels=tuple(levels), **opts)
    return compress.run_job(reader.records(), str(root), str(out), options, compress.execute_serially,
                            not_read=reader.skipped)


def animated_gif(frames: int = 3) -> bytes:
    images = [Image.fromarray(photo(name, (24, 16))) for name in ("chelsea", "coffee", "astronaut")[:frames]]
    buf = io.BytesIO()
    images[0].save(buf, "GIF", save_all=True, append_images=images[1:], duration=100, loop=0)
    return buf.getvalue()


# --- FIFOs, sockets, devices --------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_fifo_named_jpg_is_skipped_with_its_reason_and_never_opened(tmp_path):
    root = dataset(tmp_path / "data")
    os.mkfifo(root / "train" / "cat" / "pipe.jpg")  # opening it for reading would block forever
    reader = create_dataset("imagefolder", str(root))
    assert [r.relpath for r in reader.records()] == ["train/cat/a.jpg", "train/cat/b.jpg"]
    (skipped,) = reader.skipped
    assert skipped.relpath == "train/cat/pipe.jpg" and "FIFO (named pipe), not a regular file" in skipped.reason

    result = run(root, tmp_path / "store")
    assert set(result.manifest["status"]) == {"ok"} and len(result.manifest) == 4
    lines = compress.describe_not_read(result.not_read, str(tmp_path / "store"))
    assert lines[0].startswith("not read: 1 not a regular file") and "skipped.csv" in lines[0]
    table = pd.read_csv(tmp_path / "store" / "skipped.csv")
    assert table.to_dict("records")[0]["relpath"] == "train/cat/pipe.jpg"


@pytest.mark.timeout(60)
def test_a_fifo_swapped_in_after_the_listing_fails_its_row_without_blocking(tmp_path):
    root = dataset(tmp_path / "data")
    records = create_dataset("imagefolder", str(root)).records()
    victim = root / "train" / "cat" / "b.jpg"
    victim.unlink()
    os.mkfifo(victim)
    options = compress.CompressOptions(codec_options=FAST, levels=(2.0,))
    result = compress.run_job(records, str(root), str(tmp_path / "store"), options, compress.execute_serially)
    row = result.manifest.set_index("relpath").loc["train/cat/b.jpg"]
    assert row["status"] == "failed" and "not a regular file: a FIFO" in row["error"]
    with pytest.raises(store.NotRegularFileError, match="FIFO"):
        store.read_bytes(str(victim))


@pytest.mark.timeout(60)
def test_sockets_and_devices_are_skipped(tmp_path):
    root = dataset(tmp_path / "data")
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(root / "train" / "cat" / "s.jpg"))
        has_dev = False
        try:
            os.mknod(root / "train" / "cat" / "null.png", 0o600 | 0o020000, os.makedev(1, 3))  # like /dev/null
            has_dev = True
        except PermissionError:
            pass  # not root: the socket alone
        reader = create_dataset("imagefolder", str(root))
        assert len(reader.records()) == 2
        reasons = {s.relpath.rsplit("/", 1)[-1]: s.reason for s in reader.skipped}
        assert "a socket, not a regular file" in reasons["s.jpg"]
        if has_dev:
            assert "a character device" in reasons["null.png"]
    finally:
        sock.close()


# --- symlinks -----------------------------------------------------------------------------------
def test_symlink_outside_the_root_is_refused_and_recorded_unless_allowed(tmp_path):
    root = dataset(tmp_path / "data")
    secret = tmp_path / "elsewhere" / "secret.jpg"
    secret.parent.mkdir()
    secret.write_bytes(jpeg_bytes(photo("astronaut", (48, 32))))
    (root / "train" / "cat" / "link.jpg").symlink_to(secret)
    (root / "train" / "cat" / "inside.jpg").symlink_to(root / "train" / "cat" / "a.jpg")
    (root / "train" / "dogs").symlink_to(secret.parent, target_is_directory=True)
    (root / "train" / "cat" / "broken.jpg").symlink_to(tmp_path / "nothing.jpg")

    result = run(root, tmp_path / "store")
    done = set(result.manifest["relpath"])
    assert done == {"train/cat/a.jpg", "train/cat/b.jpg", "train/cat/inside.jpg"}  # a link inside is fine
    reasons = {s.relpath: s.reason for s in result.not_read}
    assert "outside the dataset root; refused" in reasons["train/cat/link.jpg"]
    assert "allow_outside_symlinks" in reasons["train/dogs"]
    assert "broken symlink" in reasons["train/cat/broken.jpg"]
    assert not any("secret" in p for p in result.manifest["output_path"].dropna())

    allowed = run(root, tmp_path / "store2", dataset_options={"allow_outside_symlinks": True})
    assert {"train/cat/link.jpg", "train/dogs/secret.jpg"} <= set(allowed.manifest["relpath"])
    assert set(allowed.manifest["status"]) == {"ok"}


def test_symlinked_folder_loop_is_listed_once(tmp_path):
    root = dataset(tmp_path / "data")
    (root / "train" / "cat" / "again").symlink_to(root / "train", target_is_directory=True)
    reader = create_dataset("imagefolder", str(root))
    assert len(reader.records()) == 2  # not an endless walk
    assert any(s.kind == "symlink loop" for s in reader.skipped)


def test_allow_outside_symlinks_must_be_a_boolean(tmp_path):
    root = dataset(tmp_path / "data")
    with pytest.raises(ValueError, match="allow_outside_symlinks must be true or false"):
        create_dataset("imagefolder", str(root), allow_outside_symlinks="yes")


# --- animated images, unsupported types ---------------------------------------------------------
def test_animated_gif_is_refused_by_default_and_first_frame_by_policy(tmp_path):
    root = dataset(tmp_path / "data")
    (root / "train" / "cat" / "anim.gif").write_bytes(animated_gif(3))
    Image.fromarray(photo("coffee", (24, 16))).save(root / "train" / "cat" / "still.gif")

    refused = run(root, tmp_path / "store", levels=(2.0,)).manifest.set_index("relpath")
    assert refused.loc["train/cat/anim.gif", "status"] == "failed"
    assert "animated image (3 frames): refused" in refused.loc["train/cat/anim.gif", "error"]
    assert refused.loc["train/cat/still.gif", "status"] == "ok"  # a still GIF is an image like any other

    first = run(root, tmp_path / "store", levels=(2.0,), animated="first").manifest.set_index("relpath")
    assert first.loc["train/cat/anim.gif", "status"] == "ok"
    assert "animated image (3 frames): its first frame is used" in first.loc["train/cat/anim.gif", "error"]
    assert first.loc["train/cat/anim.gif", "width"] == 24


def test_unsupported_types_are_counted_by_extension(tmp_path):
    root = dataset(tmp_path / "data")
    for name in ("notes.txt", "more.txt", "labels.csv", "README"):
        (root / "train" / "cat" / name).write_text("not an image\n")
    result = run(root, tmp_path / "store", levels=(2.0,))
    (line,) = compress.describe_not_read(result.not_read, str(tmp_path / "store"))
    assert line.startswith("files of unsupported types, not compressed: .txt 2, (none) 1, .csv 1")
    assert len(result.manifest) == 2


# --- how level 0 was made -----------------------------------------------------------------------
def test_level0_method_says_transcode_or_pixels(tmp_path):
    root = dataset(tmp_path / "data")
    (root / "train" / "cat" / "cmyk.jpg").write_bytes(cmyk_jpeg())
    Image.fromarray(photo("astronaut", (48, 32))).save(root / "train" / "cat" / "p.png")
    m = run(root, tmp_path / "store").manifest
    level0 = m[m["level"] == 0.0].set_index("relpath")["level0_method"].to_dict()
    assert level0 == {"train/cat/a.jpg": "jpeg_transcode", "train/cat/b.jpg": "jpeg_transcode",
                      "train/cat/cmyk.jpg": "pixels", "train/cat/p.png": "pixels"}
    assert m[m["level"] == 2.0]["level0_method"].isna().all()  # lossy levels: not applicable
    from lossyvision.codecs.jpegxl import reconstruct_jpeg

    cmyk_row = m[(m["relpath"] == "train/cat/cmyk.jpg") & (m["level"] == 0.0)].iloc[0]
    with pytest.raises(ValueError, match="no reconstruction data"):  # pixels: no JPEG comes back
        reconstruct_jpeg((tmp_path / "store" / cmyk_row["output_path"]).read_bytes())


# --- a planted manifest path --------------------------------------------------------------------
@pytest.mark.parametrize("planted", ["../../outside.jxl", "/etc/passwd", "s3://bucket/x.jxl", "jpegxl-2/../../x"])
def test_manifest_path_outside_the_store_is_a_corrupt_row_never_followed(tmp_path, planted):
    root = dataset(tmp_path / "data")
    out = tmp_path / "store"
    run(root, out, levels=(2.0,))
    df = manifest.read_manifest(str(out))
    df.loc[df["relpath"] == "train/cat/a.jpg", "output_path"] = planted
    manifest.write_manifest(str(out), df)

    again = manifest.read_manifest(str(out)).set_index("relpath")
    assert again.loc["train/cat/a.jpg", "status"] == "failed"
    assert "corrupt manifest row: output_path" in again.loc["train/cat/a.jpg", "error"]
    assert again.loc["train/cat/b.jpg", "status"] == "ok"
    with pytest.raises(manifest.CorruptRowError, match="not inside the store"):
        manifest.output_uri(str(out), planted)

    from lossyvision.spec import parse_sweep
    from lossyvision.sweep.trials import TrialError, store_uri

    sweep = parse_sweep({"name": "t", "dataset": {"root": str(root)}, "train_levels": [2], "test_levels": [2],
                         "models": [{"name": "m", "task": "classification", "arch": "resnet10t"}],
                         "output": str(tmp_path / "o"), "store": str(out)})
    with pytest.raises(TrialError, match="corrupt manifest row"):
        store_uri(sweep, planted)

    redone = run(root, out, levels=(2.0,)).manifest.set_index("relpath")  # the next compress redoes it
    assert redone.loc["train/cat/a.jpg", "status"] == "ok"
    assert redone.loc["train/cat/a.jpg", "output_path"] == "jpegxl-2/train/cat/a.jxl"


# --- a full disk --------------------------------------------------------------------------------
@pytest.fixture
def tiny_disk(tmp_path):
    """A real 3 MB filesystem (tmpfs); needs root, skipped otherwise."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode(errors='replace').strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.timeout(120)
def test_a_full_disk_names_the_path(tiny_disk, tmp_path):
    root = tmp_path / "data" / "train" / "noise"
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(6):  # random pixels: ~0.75 MB each losslessly, 4.5 MB > 3 MB
        Image.fromarray(rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)).save(root / f"n{i}.png")
    out = tiny_disk / "store"
    result = run(tmp_path / "data", out, levels=(0.0,))
    failed = result.manifest[result.manifest["status"] == "failed"]
    assert len(failed) and failed["error"].str.contains("No space left on device").all()
    assert failed["error"].str.contains(str(out / "jpegxl-0" / "train" / "noise")).all()  # each names its file
    with open(tiny_disk / "filler", "wb") as f:  # whatever room is left: gone too
        with pytest.raises(OSError):
            while True:
                f.write(b"\0" * 65536)
                f.flush()
    with pytest.raises(OSError) as err:  # now the manifest's own write fails: it names its file
        run(tmp_path / "data", out, levels=(0.0,))
    assert err.value.filename is not None and str(err.value.filename).startswith(str(out))
    from lossyvision.commands.errors import os_error_line

    line = os_error_line(err.value)
    assert line.startswith(str(out)) and line.endswith(": No space left on device")


# --- what failed, said without opening the manifest -------------------------------------------
def test_failures_are_counted_by_reason_with_example_paths(tmp_path):
    from badimages import EXPECTED_REASONS, write_bad_images

    root = dataset(tmp_path / "data")
    cases = write_bad_images(root / "train" / "odd")
    result = run(root, tmp_path / "store", levels=(1.0, 2.0))
    failed = {p.name for p, outcome in cases.values() if outcome == "failed"}
    lines = compress.describe_failures(result.manifest, str(tmp_path / "store"))
    assert lines[0] == (f"failed: {len(failed)} images ({2 * len(failed)} of {len(result.manifest)} "
                        "image x level pairs), by reason:")
    body = "\n".join(lines[1:-1])
    for name, reason in EXPECTED_REASONS.items():
        shown = reason.split(":")[0]
        assert shown in body, (name, lines)
    # two images "not an image": one line for both, the larger group first, each path named once
    (both,) = [line for line in lines if "not an image" in line]
    assert both.startswith("  2 not an image") and both.count("train/odd/") == 2
    assert lines[1] == both
    assert "manifest.parquet" in lines[-1] and "retries" in lines[-1]
    assert sum(int(line.split()[0]) for line in lines[1:-1]) == len(failed)

    # a kind is the reason's head with numbers blanked; a long list is cut with a count
    rows = pd.DataFrame({"relpath": [f"x/{i}.png" for i in range(9)], "status": "failed",
                         "error": [f"too large to decode in memory: {i}000x{i}000" for i in range(3)]
                         + [f"reason {c}" for c in "abcdef"]})
    lines = compress.describe_failures(rows, kinds=3, examples=2)
    assert lines[1] == "  3 too large to decode in memory: x/0.png, x/1.png, ..."
    assert lines[-2] == "  and 4 other reason(s)" and "the manifest" in lines[-1]
    assert compress.describe_failures(result.manifest[result.manifest["status"] == "ok"]) == []
