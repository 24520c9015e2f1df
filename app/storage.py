"""Content-addressed blob store on a local (or shared, mounted) folder.

Keys are ``<kind>/<aa>/<sha256>``. Writes go to a temporary file in the same folder and are renamed
into place, so a reader never sees a half-written blob and two writers of the same content agree.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO

CHUNK = 1 << 20


class BlobStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    def key_for(self, sha256: str, kind: str = "items") -> str:
        return f"{kind}/{sha256[:2]}/{sha256}"

    def path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise ValueError(f"blob key escapes the store: {key!r}")
        return path

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def put_bytes(self, data: bytes, kind: str = "items") -> tuple[str, str]:
        """Store ``data``; returns (key, sha256). Idempotent."""
        sha = hashlib.sha256(data).hexdigest()
        key = self.key_for(sha, kind)
        if not self.exists(key):
            self._write_atomically(key, lambda f: f.write(data))
        return key, sha

    def put_file(self, source: BinaryIO, kind: str = "artifacts") -> tuple[str, str, int]:
        """Stream a file-like object into the store; returns (key, sha256, size)."""
        target_dir = self.root / kind / "tmp"
        target_dir.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        size = 0
        fd, tmp = tempfile.mkstemp(dir=target_dir)
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := source.read(CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
            sha = digest.hexdigest()
            key = self.key_for(sha, kind)
            final = self.path(key)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
            return key, sha, size
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get_bytes(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def _write_atomically(self, key: str, write) -> None:
        final = self.path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out:
                write(out)
            os.replace(tmp, final)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
