"""Small in-memory distributions for the malware scanner's tests.

Everything here is built at test time from harmless look-alikes: code that has the *shape* of
malware (decode-then-exec, download-and-run, exfiltration to a webhook…) but whose payloads are
things like ``print(1)`` and whose hosts are reserved (``.invalid``, ``example.com``). Nothing
is ever executed: the scanner only reads bytes.
"""

from __future__ import annotations

import base64
import io
import tarfile
import time
import warnings
import zipfile
from collections.abc import Iterable, Mapping

Files = Mapping[str, bytes | str]

WHEEL = b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"


def _b(v: bytes | str) -> bytes:
    return v.encode() if isinstance(v, str) else v


def sdist(files: Files, name: str = "demo-1.0") -> bytes:
    """A .tar.gz sdist: ``files`` are paths relative to the ``name/`` folder."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        entries = {"PKG-INFO": b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n", **files}
        for path, data in entries.items():
            raw = _b(data)
            ti = tarfile.TarInfo(f"{name}/{path}")
            ti.size = len(raw)
            ti.mtime = 1_700_000_000
            tf.addfile(ti, io.BytesIO(raw))
    return buf.getvalue()


def wheel(files: Files, dist: str = "demo-1.0", pure: bool = True) -> bytes:
    """A .whl (zip) with a dist-info folder."""
    entries: dict[str, bytes | str] = dict(files)
    entries[f"{dist}.dist-info/METADATA"] = "Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n"
    entries[f"{dist}.dist-info/WHEEL"] = WHEEL if pure else WHEEL.replace(b"true", b"false")
    entries[f"{dist}.dist-info/RECORD"] = ""
    return zip_bytes(entries.items())


def zip_bytes(entries: Iterable[tuple[str | zipfile.ZipInfo, bytes | str]]) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are deliberate in some tests
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name, data in entries:
                zf.writestr(name, _b(data))
    return buf.getvalue()


def tar_bytes(members: Iterable[tarfile.TarInfo | tuple[str, bytes]], gz: bool = True) -> bytes:
    """A tar(.gz) from raw TarInfo headers (links, devices) or (name, data) pairs."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w") as tf:
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                tf.addfile(m)
            else:
                ti = tarfile.TarInfo(m[0])
                ti.size = len(m[1])
                ti.mtime = int(time.time())
                tf.addfile(ti, io.BytesIO(m[1]))
    return buf.getvalue()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def setup_py(body: str, cmdclass: bool = False) -> str:
    """A setup.py running ``body`` at install time (top level, or in an install command)."""
    if not cmdclass:
        return f"from setuptools import setup\n{body}\nsetup(name='demo', version='1.0')\n"
    indented = "\n".join("        " + ln for ln in body.splitlines())
    return (
        "from setuptools import setup\n"
        "from setuptools.command.install import install\n\n"
        "class PostInstall(install):\n"
        "    def run(self):\n"
        f"{indented}\n"
        "        install.run(self)\n\n"
        "setup(name='demo', version='1.0', cmdclass={'install': PostInstall})\n"
    )
