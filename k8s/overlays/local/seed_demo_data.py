"""Local overlay: create the bucket and upload the demo dataset once, before the head starts.

Runs as the Ray head pod's init container, so the sweep never starts before its data exists.
Idempotent: a marker object written after the upload makes reruns a no-op.
"""

import os
import subprocess
import sys
import tempfile

import s3fs  # endpoint and credentials from AWS_ENDPOINT_URL / AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY

bucket = os.environ["LOSSYVISION_BUCKET"]
target = f"{bucket}/datasets/demo"
marker = f"{target}/.lossyvision-seeded"

fs = s3fs.S3FileSystem()
if not fs.exists(bucket):
    fs.mkdir(bucket)
    print(f"created bucket {bucket}")
if fs.exists(marker):
    print(f"s3://{target} already holds the demo dataset")
    sys.exit(0)
with tempfile.TemporaryDirectory() as tmp:
    local = os.path.join(tmp, "demo")
    subprocess.run(["lossyvision", "demo-data", local], check=True)
    fs.put(local + "/", target, recursive=True)
fs.pipe_file(marker, b"ok\n")
print(f"uploaded the demo dataset to s3://{target}")
