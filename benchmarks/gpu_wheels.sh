#!/usr/bin/env bash
# Wheels for benchmarks/gpu_check.sh: run HERE, where pip reaches the package registries, before the device calls.
#
# The GPU machine (/work/.library/device/KINDS.md, nvidia-h200) has Python 3.12 with torch, timm, pandas,
# pyarrow, scipy, ... but not ray, mlflow, imagecodecs or pydantic, and reaches no registry. This fetches
# cp312 manylinux wheels of what it lacks (the project's versions here; their dependencies that the image's
# package list, benchmarks/gpu_image_packages.txt, does not name) into .whl/ (.gitignore), and packs them in
# sets of at most 56 MiB, one per device call (a call carries at most 64 MiB). Ray's wheel (about 77 MB) is
# cut in two parts, joined again there.
#
#   bash benchmarks/gpu_wheels.sh            # then, with the device tool, for each set but the last:
#     run(carry=[".whl/set1"], command="bash benchmarks/gpu_check.sh --stage", timeout_s=120)
#   and at once (the machine stays warm 30 s, and keeps /tmp while warm):
#     run(carry=[".whl/setN"], command="bash benchmarks/gpu_check.sh", timeout_s=600)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[[ -x $PY ]] || PY=python3
rm -rf .whl && mkdir -p .whl/all
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64)
pin() { "$PY" -c "import importlib.metadata as m; print('$1==' + m.version('$1'))"; }
REQS=("$(pin ray)" "$(pin mlflow)" "$(pin imagecodecs)" "$(pin pydantic)")
echo "resolving for cp312: ${REQS[*]}"
"$PY" -m pip install -q --dry-run --ignore-installed --report .whl/report.json --target .whl/none \
  --only-binary=:all: --python-version 3.12 --implementation cp "${PLATFORMS[@]}" "${REQS[@]}"
"$PY" - <<'EOF' > .whl/wanted.txt
import json, re
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
present = {norm(l.strip()) for l in open("benchmarks/gpu_image_packages.txt") if l.strip() and not l.startswith("#")}
for item in json.load(open(".whl/report.json"))["install"]:
    meta = item["metadata"]
    if norm(meta["name"]) not in present:
        print(f"{meta['name']}=={meta['version']}")
EOF
echo "missing on the GPU image: $(tr '\n' ' ' < .whl/wanted.txt)"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${PLATFORMS[@]}" \
  -d .whl/all -r .whl/wanted.txt
# Sets of at most 56 MiB (the repo travels too); a wheel larger than that is cut into parts (NAME.whl.part-00, -01) that --stage joins.
"$PY" - <<'EOF'
import os, shutil
limit = 56 * 2**20
files = sorted(os.listdir(".whl/all"), key=lambda f: -os.path.getsize(f".whl/all/{f}"))
pieces = []
for f in files:
    path, n = f".whl/all/{f}", os.path.getsize(f".whl/all/{f}")
    if n <= limit:
        pieces.append((f, path, 0, n))
    else:
        for i, start in enumerate(range(0, n, limit)):
            pieces.append((f"{f}.part-{i:02d}", path, start, min(limit, n - start)))
bins = []  # first fit, largest first
for name, path, start, n in sorted(pieces, key=lambda p: -p[3]):
    for b in bins:
        if b[0] + n <= limit:
            b[0] += n; b[1].append((name, path, start, n)); break
    else:
        bins.append([n, [(name, path, start, n)]])
for i, (total, items) in enumerate(bins, 1):
    d = f".whl/set{i}"
    os.makedirs(d, exist_ok=True)
    for name, path, start, n in items:
        with open(path, "rb") as src, open(f"{d}/{name}", "wb") as dst:
            src.seek(start); dst.write(src.read(n))
    print(f"{d}: {total / 2**20:.1f} MiB, {len(items)} file(s)")
shutil.rmtree(".whl/all"); shutil.rmtree(".whl/none", ignore_errors=True)
EOF
