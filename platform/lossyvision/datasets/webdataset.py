"""WebDataset: uncompressed ``.tar`` shards of samples, an image plus a ``.cls`` or ``.json`` label each.

The root is a folder (or prefix, or one ``.tar`` file) holding the shards::

    train-000000.tar    sample0001.jpg  sample0001.cls     (.cls: the class index as text)
                        sample0002.png  sample0002.json    (.json: {"label": "cat", ...})
    test-000000.tar     ...
    val/000000.tar      (shards may sit in split folders)

Members group into samples as in the ``webdataset`` library: the key is the member's path up to
the first dot of its file name, the rest is the field (``jpg``, ``cls``, ``seg.png``). A sample's
image is its one member whose field is an image extension (``jpg``, ``jpeg``, ``png``, ``webp``,
...); other fields (``seg.png``, ``txt``) are left alone.
The split is a shard's first folder, else its name without the trailing shard number
(``train-000000.tar`` -> "train"). Options:

- ``splits``: ``{split: glob}`` of shard paths under the root (``{"train": "shard-0[0-7]*.tar"}``),
  when the names do not say it;
- ``split_map``: rename splits; ``classes``: class names in label order (see
  :mod:`lossyvision.datasets._labels`); ``label_key``: the key of the label in ``.json`` members
  (default ``label``).

Listing reads the tar headers and the small label members, through fsspec (``s3://`` works); an
image's bytes are then one ranged read of its member (offset and size kept in
``Record.source``), so a worker never downloads a whole shard to compress one image. Compressed
shards (``.tar.gz``) cannot be read by range and are refused. Relpaths are
``<shard without .tar>/<key>.<ext>``.

Why not ``ray.data.read_webdataset`` for the compress job: it streams whole shards into blocks
with one column set, which suits a training loop; the compress job is a resumable plan of
(image, level) items that skips what is done, records a failure per image and needs samples
whose fields differ (``jpg`` + ``cls`` beside ``png`` + ``json``). Its grouping of members into
samples is the same as here; the end-to-end test checks that both see the same samples and labels.
"""

from __future__ import annotations

import fnmatch
import json
import os
import posixpath
import re
import tarfile
from typing import Any, Sequence

from lossyvision.datasets._files import IMAGE_EXTENSIONS, not_found, parse_split_map, require_dir
from lossyvision.datasets._labels import check_options, parse_classes, resolve_labels
from lossyvision.datasets.base import (
    DATASETS,
    TASK_CLASSIFICATION,
    Record,
    ScannedReader,
    file_info,
    file_versions,
    sorted_records,
)
from lossyvision.store import filesystem, is_remote, join

OPTIONS = ("splits", "split_map", "classes", "label_key")
IMAGE_FIELDS = tuple(ext.lstrip(".") for ext in IMAGE_EXTENSIONS)
_SHARD_NUMBER = re.compile(r"^(.*?)[-_.]?\d+$")


def shard_split(shard_relpath: str) -> str:
    """``val/0001.tar`` -> "val"; ``train-000000.tar`` -> "train"; else "train"."""
    if "/" in shard_relpath:
        return shard_relpath.split("/", 1)[0]
    stem = posixpath.basename(shard_relpath)[:-len(".tar")]
    m = _SHARD_NUMBER.match(stem)
    return (m.group(1) if m else stem) or "train"


def sample_key(member_name: str) -> tuple[str, str]:
    """``a/b/x.seg.png`` -> (``a/b/x``, ``seg.png``), as ``webdataset.tariterators`` splits names."""
    folder, base = posixpath.split(member_name)
    key, dot, field = base.partition(".")
    return posixpath.join(folder, key) if folder else key, field.lower() if dot else ""


@DATASETS.register("webdataset")
class WebDatasetReader(ScannedReader):
    """Tar shards of (image, label) samples; images are read by byte range from their shard."""

    name = "webdataset"
    root_may_be_file = True
    task = TASK_CLASSIFICATION
    whole_files = False

    def __init__(self, root: str, **options: Any) -> None:
        super().__init__(root, **options)
        check_options("webdataset", options, OPTIONS)
        splits = options.get("splits")
        if splits is not None and (not isinstance(splits, dict) or not splits or not all(
                isinstance(k, str) and k and isinstance(v, (str, list)) for k, v in splits.items())):
            raise ValueError(f"webdataset: option splits must map split names to shard globs, got {splits!r}")
        self.split_globs: dict[str, list[str]] | None = (
            {k: [v] if isinstance(v, str) else list(v) for k, v in splits.items()} if splits else None)
        self.split_map = parse_split_map("webdataset", options.get("split_map"))
        self.fixed_classes = parse_classes("webdataset", options.get("classes"))
        label_key = options.get("label_key", "label")
        if not isinstance(label_key, str) or not label_key:
            raise ValueError(f"webdataset: option label_key must be a key name, got {label_key!r}")
        self.label_key = label_key
        self._shards: dict[str, dict[str, Any]] | None = None

    # ------------------------------------------------------------------ where shards are
    @property
    def base(self) -> str:
        """The folder shard relpaths are relative to: the root, or its parent for a single shard."""
        if self.root.lower().endswith(".tar"):
            if is_remote(self.root):
                scheme, rest = self.root.split("://", 1)
                return f"{scheme}://{posixpath.dirname(rest)}"
            return os.path.dirname(os.path.abspath(self.root))
        return self.root

    def shards(self) -> list[str]:
        """Shard relpaths (sorted) under :attr:`base`."""
        if self.root.lower().endswith(".tar"):
            fs, path = filesystem(self.root)
            if not fs.isfile(path):
                raise not_found("webdataset", self.root)
            return [posixpath.basename(path)]
        require_dir("webdataset", self.root)
        files = self.list_files()
        compressed = [f for f in files if f.lower().endswith((".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar.zst"))]
        if compressed:
            raise ValueError(f"webdataset: {join(self.root, compressed[0])} is a compressed shard; images are read "
                             "by byte range, so shards must be plain .tar (recompress with `gunzip`)")
        shards = [f for f in files if f.lower().endswith(".tar")]
        if not shards:
            raise ValueError(f"webdataset: no .tar shards under {self.root}")
        return shards

    def _split_of(self, shard: str) -> str | None:
        if self.split_globs is None:
            return shard_split(shard)
        for split, globs in self.split_globs.items():
            if any(fnmatch.fnmatchcase(shard, g) for g in globs):
                return split
        return None  # a shard no glob names is left out

    # ------------------------------------------------------------------ listing

    def _read_shard(self, shard: str) -> list[tuple[str, str, int, int, Any, str]]:
        """``(key, image field, offset, size, label value, where)`` per sample of one shard."""
        uri = join(self.base, shard)
        fs, path = filesystem(uri)
        samples: dict[str, dict[str, Any]] = {}
        try:
            with fs.open(path, "rb") as f, tarfile.open(fileobj=f, mode="r:") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    key, field = sample_key(member.name)
                    if not field or posixpath.basename(key).startswith("."):
                        continue
                    sample = samples.setdefault(key, {"images": []})
                    if field in IMAGE_FIELDS:
                        sample["images"].append((field, member.offset_data, member.size))
                    elif field in ("cls", "json"):
                        data = tar.extractfile(member).read()  # type: ignore[union-attr]
                        sample[field] = data
        except tarfile.ReadError as e:
            raise ValueError(f"webdataset: {uri} is not a readable plain tar file ({e})") from None
        except (EOFError, OSError) as e:
            raise ValueError(f"webdataset: {uri} cannot be read to the end ({e})") from None
        out = []
        for key, sample in samples.items():
            where = f"{uri}: sample {key}"
            if not sample["images"]:
                raise ValueError(f"webdataset: {where} has no image member ({', '.join(IMAGE_FIELDS)})")
            if len(sample["images"]) > 1:
                fields = ", ".join(f for f, _, _ in sample["images"])
                raise ValueError(f"webdataset: {where} has several images ({fields}); one per sample")
            field, offset, size = sample["images"][0]
            out.append((key, field, offset, size, self._label(sample, where), where))
        return out

    def _label(self, sample: dict[str, Any], where: str) -> Any:
        if "cls" in sample:
            try:
                return sample["cls"].decode("utf-8").strip()
            except UnicodeDecodeError:
                raise ValueError(f"webdataset: {where}.cls is not text") from None
        if "json" in sample:
            try:
                meta = json.loads(sample["json"])
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise ValueError(f"webdataset: {where}.json is not valid JSON") from None
            if not isinstance(meta, dict) or self.label_key not in meta:
                raise ValueError(f"webdataset: {where}.json has no {self.label_key!r} key (option label_key)")
            return meta[self.label_key]
        raise ValueError(f"webdataset: {where} has no .cls or .json label member")

    def _scan(self) -> None:
        rows = []  # (split, relpath, source, label value, where)
        for shard in self.shards():
            split = self._split_of(shard)
            if split is None:
                continue
            stem = shard[:-len(".tar")]
            for key, field, offset, size, value, where in self._read_shard(shard):
                rows.append((self.split_map.get(split, split), f"{stem}/{key}.{field}",
                             f"{shard}#{offset}:{size}", value, where))
        if not rows:
            raise ValueError(f"webdataset: the shards under {self.root} hold no samples"
                             + (" (no shard matches option splits)" if self.split_globs else ""))
        classes, labels = resolve_labels("webdataset", [r[3] for r in rows], [r[4] for r in rows],
                                         self.fixed_classes)
        self._classes = classes
        self._records = sorted_records(Record(relpath=rel, split=split, label=label, source=source)
                                       for (split, rel, source, _, _), label in zip(rows, labels))

    # ------------------------------------------------------------------ sources
    @staticmethod
    def parse_source(source: str) -> tuple[str, int, int]:
        """``"train-0.tar#1536:4096"`` -> (shard relpath, offset, size)."""
        shard, _, span = source.rpartition("#")
        offset, _, size = span.partition(":")
        return shard, int(offset), int(size)

    def source_uri(self, record: Record) -> str:
        shard, offset, _ = self.parse_source(record.source or "")
        return f"{join(self.base, shard)}#{offset}"

    def read_source(self, record: Record) -> bytes:
        """The member's bytes: one ranged read of its shard."""
        if record.source is None:
            raise ValueError(f"webdataset: record {record.relpath} has no source")
        shard, offset, size = self.parse_source(record.source)
        fs, path = filesystem(join(self.base, shard))
        data = fs.cat_file(path, start=offset, end=offset + size)
        if len(data) != size:
            raise EOFError(f"truncated shard: {size} bytes expected at offset {offset}, got {len(data)}")
        return bytes(data)

    def source_info(self, records: Sequence[Record]) -> dict[str, dict[str, Any]]:
        """Size of each member; version = its shard's version and the member's offset."""
        if self.root.lower().endswith(".tar"):
            fs, path = filesystem(self.root)
            shards = {posixpath.basename(path): file_info(fs.info(path))}
        else:
            shards = file_versions(self.root)
        out = {}
        for r in records:
            shard, offset, size = self.parse_source(r.source or "")
            if shard in shards:
                out[r.relpath] = {"size": size, "version": f"{shards[shard]['version']}#{offset}"}
        return out
