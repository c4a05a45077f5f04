#!/usr/bin/env python3
"""Write a single-layer OCI image layout as a tar, with no daemon and no registry.

    oci-image.py --ref NAME:TAG --out image.tar [--entrypoint JSON] [--cmd JSON] [--user U]
                 [--tree DIR [--exclude PATH]...] [--file SRC:DST[:MODE]]...
                 [--busybox-applets DIR] [--symlink DST:TARGET]...

--tree adds a whole root filesystem (directories, files, symlinks; modes and owners kept,
device nodes and sockets left out: the runtime provides /dev); later --file and --symlink
entries replace what the tree has at the same path.

`ctr -n k8s.io images import image.tar` names the image after the io.containerd.image.name
annotation of index.json (the full reference). The layer is an uncompressed tar with every
timestamp at 0 and root ownership, so the same inputs give the same image digest.
"""

import argparse
import hashlib
import io
import json
import os
import stat
import subprocess
import sys
import tarfile


def fail(msg):
    print(f"oci-image.py: {msg}", file=sys.stderr)
    sys.exit(1)


class Layer:
    """A layer tar built in memory: one entry per path (a later one replaces an earlier one in
    place), parents before children."""

    def __init__(self):
        self.entries = {}

    def _info(self, name, kind, mode, uid=0, gid=0):
        ti = tarfile.TarInfo(name)
        ti.type = kind
        ti.mode = mode
        ti.mtime = 0
        ti.uid, ti.gid = uid, gid
        ti.uname = ti.gname = "root" if uid == 0 and gid == 0 else ""
        return ti

    def has(self, path):
        return path.strip("/") in self.entries

    def dir(self, path, mode=0o755, uid=0, gid=0):
        path = path.strip("/")
        if not path:
            return
        if path in self.entries and self.entries[path][0].type == tarfile.DIRTYPE:
            return
        self.dir(os.path.dirname(path))
        self.entries[path] = (self._info(path, tarfile.DIRTYPE, mode, uid, gid), None)

    def file(self, path, data, mode, uid=0, gid=0):
        path = path.strip("/")
        self.dir(os.path.dirname(path))
        ti = self._info(path, tarfile.REGTYPE, mode, uid, gid)
        ti.size = len(data)
        self.entries[path] = (ti, data)

    def symlink(self, path, target, uid=0, gid=0):
        path = path.strip("/")
        self.dir(os.path.dirname(path))
        ti = self._info(path, tarfile.SYMTYPE, 0o777, uid, gid)
        ti.linkname = target
        self.entries[path] = (ti, None)

    def tree(self, root, excludes):
        """Every directory, regular file and symlink under `root`, in sorted order."""
        excl = [e.strip("/") for e in excludes]

        def excluded(rel):
            return any(rel == e or rel.startswith(e + "/") for e in excl)

        for cur, dirs, files in os.walk(root):
            dirs.sort()
            rel_dir = os.path.relpath(cur, root)
            rel_dir = "" if rel_dir == "." else rel_dir
            for name in sorted(dirs + files):
                full = os.path.join(cur, name)
                rel = os.path.join(rel_dir, name)
                if excluded(rel):
                    if name in dirs:
                        dirs.remove(name)
                    continue
                st = os.lstat(full)
                mode = stat.S_IMODE(st.st_mode)
                if stat.S_ISLNK(st.st_mode):
                    self.symlink(rel, os.readlink(full), st.st_uid, st.st_gid)
                elif stat.S_ISDIR(st.st_mode):
                    self.dir(rel, mode, st.st_uid, st.st_gid)
                elif stat.S_ISREG(st.st_mode):
                    with open(full, "rb") as f:
                        self.file(rel, f.read(), mode, st.st_uid, st.st_gid)

    def finish(self):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for ti, data in self.entries.values():
                tar.addfile(ti, io.BytesIO(data) if data is not None else None)
        return buf.getvalue()


def blob(out, data):
    digest = hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo(f"blobs/sha256/{digest}")
    info.size = len(data)
    info.mode = 0o644
    out.addfile(info, io.BytesIO(data))
    return f"sha256:{digest}", len(data)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ref", required=True, help="full image reference, NAME:TAG")
    ap.add_argument("--out", required=True)
    ap.add_argument("--entrypoint", default=None, help="JSON list")
    ap.add_argument("--cmd", default=None, help="JSON list")
    ap.add_argument("--user", default=None)
    ap.add_argument("--tree", default=None, help="a root filesystem directory to start from")
    ap.add_argument("--exclude", action="append", default=[], help="a path in --tree to leave out")
    ap.add_argument("--file", action="append", default=[], help="SRC:DST[:MODE(octal)]")
    ap.add_argument("--symlink", action="append", default=[], help="DST:TARGET")
    ap.add_argument(
        "--busybox-applets",
        default=None,
        help="directory of the image's /bin/busybox; adds a symlink per applet there",
    )
    a = ap.parse_args()

    name, _, tag = a.ref.rpartition(":")
    if not name or "/" in tag:
        fail(f"--ref {a.ref!r}: want NAME:TAG")

    layer = Layer()
    if a.tree is not None:
        if not os.path.isdir(a.tree):
            fail(f"--tree {a.tree!r}: not a directory")
        layer.tree(a.tree, a.exclude)
    layer.dir("tmp", 0o1777)
    layer.dir("etc")
    if not layer.has("etc/passwd"):
        layer.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n", 0o644)
    if not layer.has("etc/group"):
        layer.file("etc/group", b"root:x:0:\nnogroup:x:65534:\n", 0o644)
    for spec in a.file:
        parts = spec.split(":")
        if len(parts) not in (2, 3):
            fail(f"--file {spec!r}: want SRC:DST[:MODE]")
        src, dst = parts[0], parts[1]
        mode = int(parts[2], 8) if len(parts) == 3 else 0o755
        try:
            with open(src, "rb") as f:
                layer.file(dst, f.read(), mode)
        except OSError as e:
            fail(f"--file {spec!r}: {e}")
    if a.busybox_applets is not None:
        bb = [f for f in a.file if f.split(":")[1].strip("/") == "bin/busybox"]
        if not bb:
            fail("--busybox-applets needs --file SRC:/bin/busybox")
        applets = subprocess.run(
            [bb[0].split(":")[0], "--list"], check=True, capture_output=True, text=True
        ).stdout.split()
        # an explicit --file or --symlink wins over the applet of the same path
        explicit = {f.split(":")[1].strip("/") for f in a.file}
        explicit |= {s.partition(":")[0].strip("/") for s in a.symlink}
        for app in applets:
            path = f"{a.busybox_applets.strip('/')}/{app}"
            if app != "busybox" and path not in explicit:
                layer.symlink(path, "/bin/busybox")
    for spec in a.symlink:
        dst, _, target = spec.partition(":")
        if not target:
            fail(f"--symlink {spec!r}: want DST:TARGET")
        layer.symlink(dst, target)
    layer_tar = layer.finish()
    diff_id = "sha256:" + hashlib.sha256(layer_tar).hexdigest()

    cfg = {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]}
    if a.entrypoint:
        cfg["Entrypoint"] = json.loads(a.entrypoint)
    if a.cmd:
        cfg["Cmd"] = json.loads(a.cmd)
    if a.user:
        cfg["User"] = a.user
    config = {
        "created": "1970-01-01T00:00:00Z",
        "architecture": "amd64",
        "os": "linux",
        "config": cfg,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "ferrovn oci-image.py"}],
    }

    tmp = a.out + ".tmp"
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as out:
        layer_digest, layer_size = blob(out, layer_tar)
        config_digest, config_size = blob(out, json.dumps(config, sort_keys=True).encode())
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config_size,
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest,
                    "size": layer_size,
                }
            ],
        }
        manifest_digest, manifest_size = blob(out, json.dumps(manifest, sort_keys=True).encode())
        index = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": manifest_digest,
                    "size": manifest_size,
                    "platform": {"architecture": "amd64", "os": "linux"},
                    "annotations": {
                        "io.containerd.image.name": a.ref,
                        "org.opencontainers.image.ref.name": tag,
                    },
                }
            ],
        }
        for fname, data in (
            ("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode()),
            ("index.json", json.dumps(index, sort_keys=True).encode()),
        ):
            info = tarfile.TarInfo(fname)
            info.size = len(data)
            info.mode = 0o644
            out.addfile(info, io.BytesIO(data))
    os.replace(tmp, a.out)
    print(f"{a.ref} -> {a.out} ({manifest_digest})")


if __name__ == "__main__":
    main()
