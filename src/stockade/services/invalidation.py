"""Cross-process cache invalidation for the embedded shape.

Any process that changes configuration (the CLI creating an index, another server worker
revoking a token) calls ``bump()``; every server checks ``changed()`` on each request, which
costs one ``stat``. A scaled deployment swaps this for PostgreSQL LISTEN/NOTIFY.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


class FileInvalidation:
    def __init__(self, run_dir: Path, name: str = "epoch") -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / name
        if not self.path.exists():
            self.bump()
        self._seen = self._stamp()

    def _stamp(self) -> tuple[int, int, int]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return (0, 0, 0)
        return (st.st_mtime_ns, st.st_ino, st.st_size)

    def bump(self, content: str | None = None) -> None:
        tmp = self.path.with_name(f".epoch.{secrets.token_hex(4)}")
        tmp.write_text(content if content is not None else secrets.token_hex(8))
        os.replace(tmp, self.path)

    def changed(self) -> bool:
        stamp = self._stamp()
        if stamp != self._seen:
            self._seen = stamp
            return True
        return False
