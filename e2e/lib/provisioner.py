#!/usr/bin/env python3
"""The test bed's dynamic volume provisioner: a small stand-in for kind's rancher local-path-provisioner.

Started by e2e/cluster up (see e2e/lib/node.sh), stopped by PID in `down`. Every INTERVAL seconds:

  provision  a PersistentVolumeClaim that is Pending, of our StorageClass (or annotated with our
             provisioner name), not bound to a named volume, and carrying the scheduler's
             `volume.kubernetes.io/selected-node` (WaitForFirstConsumer) gets a directory
             VOLUMES_DIR/pvc-<uid>, mode 0777 so any uid can create its own subdirectory in it, and
             a hostPath PersistentVolume `pvc-<uid>` pre-bound to it (claimRef) with node affinity to
             the selected node. The PV controller completes the binding.
  delete     a PersistentVolume with our `pv.kubernetes.io/provisioned-by` annotation, in phase
             Released or Failed, with reclaim policy Delete: its directory is removed (only when it
             is a direct child of VOLUMES_DIR) and the PV is deleted.

It talks to the API with urllib and the client certificate given on the command line; Python 3
standard library only. A failed API call is logged and retried on the next round, never fatal.
"""

import argparse
import json
import os
import shutil
import signal
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

ANN_PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
ANN_SELECTED_NODE = "volume.kubernetes.io/selected-node"
ANN_STORAGE_PROVISIONER = ("volume.kubernetes.io/storage-provisioner",
                           "volume.beta.kubernetes.io/storage-provisioner")
HOSTNAME_LABEL = "kubernetes.io/hostname"


def log(msg):
    print(time.strftime("%Y-%m-%dT%H:%M:%S") + " " + msg, flush=True)


class ApiError(Exception):
    def __init__(self, status, msg):
        super().__init__(f"HTTP {status}: {msg}" if status else msg)
        self.status = status


class Api:
    def __init__(self, server, ca, cert, key, timeout=10):
        self.server = server.rstrip("/")
        self.timeout = timeout
        self.ctx = ssl.create_default_context(cafile=ca)
        self.ctx.load_cert_chain(cert, key)

    def request(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.server + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=self.timeout) as resp:
                return json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")
            try:
                detail = json.loads(detail).get("message", detail)
            except ValueError:
                pass
            raise ApiError(e.code, f"{method} {path}: {detail}") from None
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise ApiError(0, f"{method} {path}: {e}") from None

    def items(self, path):
        return self.request("GET", path).get("items") or []


class Provisioner:
    def __init__(self, api, volumes_dir, name, storage_class):
        self.api = api
        self.volumes_dir = os.path.abspath(volumes_dir)
        self.name = name
        self.storage_class = storage_class
        self.reported = {}  # key -> last message logged, so a repeating error is logged once

    def report(self, key, msg):
        if self.reported.get(key) != msg:
            self.reported[key] = msg
            log(msg)

    def forget(self, key):
        self.reported.pop(key, None)

    def ours_claim(self, pvc):
        spec, ann = pvc.get("spec") or {}, pvc["metadata"].get("annotations") or {}
        if spec.get("storageClassName") == self.storage_class:
            return True
        return any(ann.get(a) == self.name for a in ANN_STORAGE_PROVISIONER)

    def node_hostname(self, node):
        """The node's kubernetes.io/hostname label (what the node affinity must match)."""
        obj = self.api.request("GET", "/api/v1/nodes/" + urllib.parse.quote(node, safe=""))
        return (obj["metadata"].get("labels") or {}).get(HOSTNAME_LABEL, node)

    def provision(self, pvc):
        meta, spec = pvc["metadata"], pvc.get("spec") or {}
        ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
        key = "pvc/" + uid
        node = (meta.get("annotations") or {})[ANN_SELECTED_NODE]
        if spec.get("volumeMode", "Filesystem") != "Filesystem":
            self.report(key, f"skip {ns}/{name}: volumeMode {spec.get('volumeMode')} is not supported")
            return
        size = ((spec.get("resources") or {}).get("requests") or {}).get("storage")
        if not size:
            self.report(key, f"skip {ns}/{name}: no storage request")
            return
        pv_name = "pvc-" + uid
        path = os.path.join(self.volumes_dir, pv_name)
        hostname = self.node_hostname(node)
        os.makedirs(path, exist_ok=True)
        os.chmod(path, 0o777)  # makedirs' mode is subject to the umask
        pv = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": pv_name, "annotations": {ANN_PROVISIONED_BY: self.name}},
            "spec": {
                "capacity": {"storage": size},
                "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Delete",
                "storageClassName": spec.get("storageClassName") or self.storage_class,
                "volumeMode": "Filesystem",
                "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                             "namespace": ns, "name": name, "uid": uid},
                "hostPath": {"path": path, "type": "DirectoryOrCreate"},
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": HOSTNAME_LABEL, "operator": "In", "values": [hostname]}]}]}},
            },
        }
        try:
            self.api.request("POST", "/api/v1/persistentvolumes", pv)
        except ApiError as e:
            if e.status != 409:  # 409: created in an earlier round
                raise
        self.forget(key)
        log(f"provisioned {pv_name} for {ns}/{name}: {size} {','.join(pv['spec']['accessModes'])}"
            f" on node {node} at {path}")

    def volume_dir(self, pv):
        """The PV's directory if it is a direct child of our volumes directory, else None."""
        path = ((pv.get("spec") or {}).get("hostPath") or {}).get("path")
        if not path or not os.path.isabs(path):
            return None
        path = os.path.normpath(path)
        if os.path.dirname(path) != self.volumes_dir or not os.path.basename(path).startswith("pvc-"):
            return None
        return path

    def delete(self, pv):
        meta, status = pv["metadata"], pv.get("status") or {}
        pv_name = meta["name"]
        key = "pv/" + pv_name
        claim = (pv.get("spec") or {}).get("claimRef") or {}
        path = self.volume_dir(pv)
        if path is None:
            host_path = ((pv.get("spec") or {}).get("hostPath") or {}).get("path")
            self.report(key, f"{pv_name}: hostPath {host_path} is not a pvc-* directory in"
                             f" {self.volumes_dir}; deleting the PV only, no directory removed")
        elif os.path.lexists(path):
            if os.path.islink(path):
                os.unlink(path)
            else:
                shutil.rmtree(path)
        try:
            self.api.request("DELETE", "/api/v1/persistentvolumes/" + urllib.parse.quote(pv_name, safe=""))
        except ApiError as e:
            if e.status != 404:
                raise
        self.forget(key)
        log(f"deleted {pv_name} (claim {claim.get('namespace')}/{claim.get('name')},"
            f" {status.get('phase')}); removed {path or 'no directory'}")

    def round(self):
        pvs = self.api.items("/api/v1/persistentvolumes")
        existing = {pv["metadata"]["name"] for pv in pvs}
        for pv in pvs:
            meta = pv["metadata"]
            if (meta.get("annotations") or {}).get(ANN_PROVISIONED_BY) != self.name:
                continue
            if meta.get("deletionTimestamp"):
                continue
            if (pv.get("status") or {}).get("phase") not in ("Released", "Failed"):
                continue
            if (pv.get("spec") or {}).get("persistentVolumeReclaimPolicy") != "Delete":
                continue
            self.guard("pv/" + meta["name"], self.delete, pv)
        for pvc in self.api.items("/api/v1/persistentvolumeclaims"):
            meta, spec = pvc["metadata"], pvc.get("spec") or {}
            if (pvc.get("status") or {}).get("phase") != "Pending" or meta.get("deletionTimestamp"):
                continue
            if spec.get("volumeName") or not self.ours_claim(pvc):
                continue
            if not (meta.get("annotations") or {}).get(ANN_SELECTED_NODE):
                continue  # WaitForFirstConsumer: the scheduler has not picked a node yet
            if "pvc-" + meta["uid"] in existing:
                continue  # provisioned; the PV controller has not bound it yet
            self.guard("pvc/" + meta["uid"], self.provision, pvc)

    def guard(self, key, fn, obj):
        """Run fn(obj); an error is logged (once while it repeats) and retried next round."""
        meta = obj["metadata"]
        try:
            fn(obj)
        except (ApiError, OSError) as e:
            what = f"{meta.get('namespace') + '/' if meta.get('namespace') else ''}{meta['name']}"
            self.report(key, f"error on {what}: {e} (retrying)")

    def run(self, interval):
        log(f"{self.name}: volumes in {self.volumes_dir}, StorageClass {self.storage_class},"
            f" every {interval}s")
        while True:
            try:
                self.round()
                if self.reported.pop("round", None):
                    log("recovered")
            except ApiError as e:
                self.report("round", f"API error: {e} (retrying)")
            except Exception as e:  # never die on something unexpected: log it, go on
                self.report("round", f"unexpected {type(e).__name__}: {e} (retrying)")
            time.sleep(interval)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--server", required=True, help="API server URL, e.g. https://127.0.0.1:6443")
    p.add_argument("--ca", required=True, help="CA certificate of the API server")
    p.add_argument("--cert", required=True, help="client certificate")
    p.add_argument("--key", required=True, help="client key")
    p.add_argument("--volumes-dir", required=True, help="where volume directories are created")
    p.add_argument("--provisioner", default="pgwarden.local/local-path")
    p.add_argument("--storage-class", default="standard")
    p.add_argument("--interval", type=float, default=1.0)
    args = p.parse_args()

    def stop(signum, _frame):
        log(f"stopping (signal {signum})")
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    os.makedirs(args.volumes_dir, exist_ok=True)
    api = Api(args.server, args.ca, args.cert, args.key)
    Provisioner(api, args.volumes_dir, args.provisioner, args.storage_class).run(args.interval)


if __name__ == "__main__":
    main()
