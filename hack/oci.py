#!/usr/bin/env python3
"""OCI images without a registry: a tar of files, a config, a manifest, an index.

No registry can be reached from these machines and there is no Docker, so the
images the real node runs are written here as OCI image layouts (the
image-spec's ``oci-layout``, ``index.json`` and ``blobs/sha256/…``, packed in
one tar: https://github.com/opencontainers/image-spec/blob/main/image-layout.md)
and imported with ``ctr -n k8s.io images import``. Layers are deterministic
(sorted entries, fixed mtimes and owners), so the same files give the same
digests and an archive is cached by the hash of what goes into it.

Only the standard library is used: this runs before any virtual environment.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

EPOCH = 0  # mtime of every entry: same input, same bytes


@dataclass(frozen=True)
class File:
    """One entry of a layer: a regular file (``data``), a directory or a symlink."""

    path: str  # absolute path in the image
    data: bytes = b""
    mode: int = 0o644
    link: str | None = None  # symlink target
    directory: bool = False


@dataclass
class Image:
    """What an image is made of; ``archive`` writes it."""

    name: str  # e.g. "localhost/pdm/pause:1"
    files: list[File]
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=lambda: ["PATH=/usr/local/bin:/usr/bin:/bin"])
    user: str = ""
    workdir: str = "/"
    #: Layers below ``files``: uncompressed tars, e.g. a Debian root filesystem
    #: from mmdebstrap.
    base: list[Path] = field(default_factory=list)
    #: More names for the same image (one index entry each).
    aliases: list[str] = field(default_factory=list)

    def layer(self) -> bytes:
        """The single layer, as an uncompressed tar (deterministic)."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            dirs = sorted({str(Path(f.path).parent) for f in self.files} - {"/"})
            parents: set[str] = set()
            for d in dirs:
                p = Path(d)
                for parent in [*reversed(p.parents), p]:
                    parents.add(str(parent))
            explicit = {f.path for f in self.files if f.directory}
            for d in sorted(parents - {"/"} - explicit):
                tar.addfile(self._info(d.lstrip("/"), tarfile.DIRTYPE, 0o755))
            for f in sorted(self.files, key=lambda f: f.path):
                name = f.path.lstrip("/")
                if f.directory:
                    tar.addfile(self._info(name, tarfile.DIRTYPE, f.mode))
                elif f.link is not None:
                    info = self._info(name, tarfile.SYMTYPE, 0o777)
                    info.linkname = f.link
                    tar.addfile(info)
                else:
                    info = self._info(name, tarfile.REGTYPE, f.mode)
                    info.size = len(f.data)
                    tar.addfile(info, io.BytesIO(f.data))
        return buf.getvalue()

    @staticmethod
    def _info(name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mode = mode
        info.mtime = EPOCH
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    def archive(self) -> bytes:
        """The OCI image layout as one tar, ready for ``ctr images import``."""
        layers = [*(b.read_bytes() for b in self.base), self.layer()]
        compressed = [gzip.compress(layer, mtime=EPOCH, compresslevel=1) for layer in layers]
        config = {
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "Entrypoint": self.entrypoint or None,
                "Cmd": self.cmd or None,
                "Env": self.env,
                "User": self.user,
                "WorkingDir": self.workdir,
            },
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{_sha(layer)}" for layer in layers]},
            # One entry per layer: builders that cache layers (buildah --layers)
            # match the history against the layers and refuse a mismatch.
            "history": [
                {"created": "1970-01-01T00:00:00Z", "created_by": f"hack/oci.py layer {i}"}
                for i in range(len(layers))
            ],
        }
        config_bytes = _json(config)
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": _descriptor("application/vnd.oci.image.config.v1+json", config_bytes),
            "layers": [
                _descriptor("application/vnd.oci.image.layer.v1.tar+gzip", c) for c in compressed
            ],
        }
        manifest_bytes = _json(manifest)
        index = {
            "schemaVersion": 2,
            "manifests": [
                {
                    **_descriptor("application/vnd.oci.image.manifest.v1+json", manifest_bytes),
                    "annotations": {
                        # containerd names the imported image after this one.
                        "io.containerd.image.name": name,
                        "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1],
                    },
                }
                for name in (self.name, *self.aliases)
            ],
        }
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name, data in [
                ("oci-layout", _json({"imageLayoutVersion": "1.0.0"})),
                ("index.json", _json(index)),
                *[
                    (f"blobs/sha256/{_sha(b)}", b)
                    for b in (config_bytes, manifest_bytes, *compressed)
                ],
            ]:
                info = self._info(name, tarfile.REGTYPE, 0o644)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return out.getvalue()

    def key(self) -> str:
        """A hash of everything that goes into the image, for caching."""
        h = hashlib.sha256(f"{LAYOUT_VERSION} ".encode())
        h.update(" ".join((self.name, *self.aliases)).encode())
        for part in (self.entrypoint, self.cmd, self.env, [self.user, self.workdir]):
            h.update(json.dumps(part).encode())
        for f in sorted(self.files, key=lambda f: f.path):
            h.update(json.dumps([f.path, f.mode, f.link, f.directory]).encode())
            h.update(hashlib.sha256(f.data).digest())
        for b in self.base:
            with b.open("rb") as fh:
                h.update(hashlib.file_digest(fh, "sha256").digest())
        return h.hexdigest()[:16]


#: Bumped when the archive's layout changes (2: history per layer), so cached
#: archives of the earlier layout are not reused.
LAYOUT_VERSION = 2


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _json(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _descriptor(media_type: str, data: bytes) -> dict[str, object]:
    return {"mediaType": media_type, "digest": f"sha256:{_sha(data)}", "size": len(data)}


def cached_archive(image: Image, cache: Path) -> Path:
    """Write ``image``'s archive once per content; returns its path."""
    cache.mkdir(parents=True, exist_ok=True)
    safe = image.name.replace("/", "_").replace(":", "_")
    path = cache / f"{safe}-{image.key()}.tar"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(image.archive())
        tmp.replace(path)
        for old in cache.glob(f"{safe}-*.tar"):  # earlier contents of the same image
            if old != path:
                old.unlink(missing_ok=True)
    return path
