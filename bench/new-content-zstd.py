#!/usr/bin/env python3
"""The yardstick for the store-growth target of issue 2: the zstd size of the file content an
image brings that another image does not already hold.

Usage: new-content-zstd.py OCI_LAYOUT BASE_TAG NEW_TAG [LEVEL]
Reads both images' layers from an OCI image layout (the peer lab's /var/lib/hb-lab/oci), takes the
regular files of NEW whose content (sha256) is not among BASE's files, concatenates them and
compresses that with `zstd -LEVEL` (default 3). Prints JSON: new file count, raw bytes, zstd bytes.
"""
import gzip
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile


def blob(layout, digest):
    return os.path.join(layout, "blobs", *digest.split(":", 1))


def layers(layout, tag):
    index = json.load(open(os.path.join(layout, "index.json")))
    for m in index["manifests"]:
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            manifest = json.load(open(blob(layout, m["digest"])))
            return [blob(layout, l["digest"]) for l in manifest["layers"]]
    sys.exit(f"tag {tag} not in {layout}")


def files(paths):
    """(sha256 -> bytes) of every regular file in the layers."""
    out = {}
    for p in paths:
        with open(p, "rb") as f:
            head = f.read(2)
        opener = gzip.open if head == b"\x1f\x8b" else open
        with opener(p, "rb") as raw, tarfile.open(fileobj=raw, mode="r|") as t:
            for m in t:
                if m.isfile():
                    data = t.extractfile(m).read()
                    out[hashlib.sha256(data).hexdigest()] = data
    return out


def main():
    layout, base_tag, new_tag = sys.argv[1:4]
    level = sys.argv[4] if len(sys.argv) > 4 else "3"
    base = files(layers(layout, base_tag))
    new = files(layers(layout, new_tag))
    fresh = [d for h, d in sorted(new.items()) if h not in base]
    with tempfile.NamedTemporaryFile() as tmp:
        for d in fresh:
            tmp.write(d)
        tmp.flush()
        raw = tmp.tell()
        z = subprocess.run(["zstd", f"-{level}", "-c", tmp.name], capture_output=True, check=True).stdout
    print(json.dumps({"new_files": len(fresh), "raw_bytes": raw, "zstd_level": int(level), "zstd_bytes": len(z)}))


if __name__ == "__main__":
    main()
