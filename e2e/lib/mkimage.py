#!/usr/bin/env python3
"""Turn a root filesystem into a docker-archive image tarball, without a registry or a Docker
engine: one uncompressed layer, an image config that carries OS and architecture, and a
manifest.json naming the tag. `ctr images import` loads the result into containerd.

    mkimage.py --rootfs-tar ROOTFS.tar --tag NAME:TAG --out IMAGE.tar \
        [--entrypoint JSON] [--cmd JSON] [--user USER] [--env K=V ...] [--workdir DIR]
"""

import argparse
import hashlib
import json
import os
import shutil
import sys
import tarfile
import tempfile


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rootfs-tar", required=True, help="uncompressed tar of the root filesystem")
    p.add_argument("--tag", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--entrypoint", type=json.loads, default=None)
    p.add_argument("--cmd", type=json.loads, default=None)
    p.add_argument("--user", default="")
    p.add_argument("--env", action="append", default=[])
    p.add_argument("--workdir", default="")
    a = p.parse_args()

    if a.tag.endswith(":latest") or ":" not in a.tag.rsplit("/", 1)[-1]:
        sys.exit("mkimage: give an explicit tag other than :latest (it would mean imagePullPolicy Always)")

    layer_digest = sha256_file(a.rootfs_tar)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Env": a.env or ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Entrypoint": a.entrypoint,
            "Cmd": a.cmd,
            "User": a.user,
            "WorkingDir": a.workdir,
        },
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + layer_digest]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "pgwarden e2e/lib/mkimage.py"}],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    manifest = [{"Config": config_name, "RepoTags": [a.tag], "Layers": [layer_digest + "/layer.tar"]}]

    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    tmp_out = a.out + ".tmp"
    with tarfile.open(tmp_out, "w", format=tarfile.PAX_FORMAT) as out:
        with tempfile.TemporaryDirectory() as d:
            for name, data in (("manifest.json", json.dumps(manifest).encode()), (config_name, config_bytes)):
                path = os.path.join(d, name)
                with open(path, "wb") as f:
                    f.write(data)
                out.add(path, arcname=name)
        out.add(a.rootfs_tar, arcname=layer_digest + "/layer.tar")
    shutil.move(tmp_out, a.out)
    print(f"mkimage: {a.tag} -> {a.out} (layer sha256:{layer_digest[:12]})")


if __name__ == "__main__":
    main()
