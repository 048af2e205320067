"""Parse OSV records (https://ossf.github.io/osv-schema/) into frozen values.

:func:`parse_osv` validates one record (already decoded from JSON or YAML) and raises
:class:`OsvError` naming the source and the offending field. :func:`iter_records` reads records
from a directory tree, a single file or a zip archive, yielding an :class:`OsvError` in place of
any file that cannot be decoded, so one bad file never stops an import.

Everything here is pure: no database, no network.
"""

from __future__ import annotations

import json
import math
import os
import re
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path, PurePosixPath
from typing import Any, Final

import cvss  # type: ignore[import-untyped]
import yaml
from packaging.utils import canonicalize_name

from stockade.core.vulns.versions import scheme_for, strip_v
from stockade.errors import InvalidRequest

try:
    from yaml import CSafeLoader as _YamlLoader
except ImportError:  # pragma: no cover - libyaml missing
    from yaml import SafeLoader as _YamlLoader  # type: ignore[assignment]

__all__ = [
    "EVENT_KINDS",
    "RATINGS",
    "Advisory",
    "Affected",
    "Event",
    "OsvError",
    "Range",
    "Severity",
    "iter_records",
    "normalize_name",
    "parse_datetime",
    "parse_osv",
    "severity_from_vector",
]

EVENT_KINDS: Final = ("introduced", "fixed", "last_affected", "limit")
RATINGS: Final = ("none", "low", "medium", "high", "critical")  # ascending
_RATING_RANK: Final = {r: i for i, r in enumerate(RATINGS)}
_RATING_ALIASES: Final = {"moderate": "medium", "important": "high"}
_VECTOR_PREFERENCE: Final = {"CVSS_V4": 3, "CVSS_V3": 2, "CVSS_V2": 1}

RECORD_SUFFIXES: Final = (".json", ".yaml", ".yml")
MAX_RECORD_BYTES: Final = 16 * 1024 * 1024  # no real advisory comes near this
_MAX_NODES: Final = 1_000_000  # YAML aliases can make a small file expand enormously
_MAX_DEPTH: Final = 64


class OsvError(InvalidRequest):
    """An OSV record (or the file holding it) is malformed."""

    def __init__(
        self, message: str, hint: str | None = None, *, source: str = "", field: str = ""
    ) -> None:
        super().__init__(message, hint)
        self.source = source
        self.field = field


def _fail(source: str, path: str, problem: str, hint: str | None = None) -> OsvError:
    where = f"OSV record {source}" if source else "OSV record"
    if path:
        where += f": {path}"
    return OsvError(f"invalid {where}: {problem}", hint, source=source, field=path)


# --- values -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Event:
    kind: str  # "introduced" | "fixed" | "last_affected" | "limit"
    value: str


@dataclass(frozen=True, slots=True)
class Range:
    type: str  # "ECOSYSTEM" | "SEMVER" | "GIT" (others are kept and never match)
    events: tuple[Event, ...]
    repo: str | None = None


@dataclass(frozen=True, slots=True)
class Affected:
    ecosystem: str  # as in the record ("PyPI", "conda"); "" when the entry names no package
    name: str  # PyPI: canonicalize_name(); others: lower-cased
    ranges: tuple[Range, ...]
    versions: tuple[str, ...]
    purl: str | None = None


@dataclass(frozen=True, slots=True)
class Severity:
    type: str  # "CVSS_V3" | "CVSS_V4" | "CVSS_V2" | "Ubuntu" | "DATABASE" | ...
    vector: str  # normalized CVSS vector when it parses, else as given ("HIGH" for DATABASE)
    score: float | None  # CVSS base score; None if not CVSS or unparseable
    rating: str | None  # one of RATINGS, or None


@dataclass(frozen=True, slots=True)
class Advisory:
    id: str
    aliases: tuple[str, ...]
    summary: str | None
    details: str | None
    published: datetime | None
    modified: datetime
    withdrawn: datetime | None
    affected: tuple[Affected, ...]
    severity: tuple[Severity, ...]
    references: tuple[tuple[str, str], ...]  # (type, url)
    # The record as parsed, JSON-compatible (YAML datetimes turned back into ISO strings).
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

    def fixed_versions(self, ecosystem: str, name: str) -> list[str]:
        """``fixed`` versions for one package, sorted by its ecosystem's ordering, de-duplicated.

        Only ECOSYSTEM and SEMVER ranges count (GIT ``fixed`` values are commit hashes). Versions
        the ecosystem cannot parse (or all of them, for ecosystems without an ordering) come after
        the sorted ones, in record order.
        """
        eco = ecosystem.lower()
        wanted = normalize_name(ecosystem, name)
        seen: set[str] = set()
        values: list[tuple[str, bool]] = []  # (value, from a SEMVER range)
        for aff in self.affected:
            if aff.ecosystem.lower() != eco or aff.name != wanted:
                continue
            for rng in aff.ranges:
                if rng.type not in ("ECOSYSTEM", "SEMVER"):
                    continue
                for ev in rng.events:
                    if ev.kind == "fixed" and ev.value not in seen:
                        seen.add(ev.value)
                        values.append((ev.value, rng.type == "SEMVER"))
        scheme = scheme_for(ecosystem)
        if scheme is None:
            return [v for v, _ in values]
        parsed: list[tuple[Any, str]] = []
        unparsed: list[str] = []
        for value, semver in values:
            try:
                key = scheme.parse(strip_v(value) if semver else value)
            except ValueError:
                unparsed.append(value)
                continue
            if all(key != k for k, _ in parsed):  # "1.0" and "1.0.0" are one version on PyPI
                parsed.append((key, value))
        parsed.sort(key=lambda kv: kv[0])
        return [v for _, v in parsed] + unparsed

    def best_severity(self) -> Severity | None:
        """The highest-scored entry (CVSS v4 over v3 over v2 on ties), else the worst rating."""
        scored = [s for s in self.severity if s.score is not None]
        if scored:
            return max(scored, key=lambda s: (s.score or 0.0, _VECTOR_PREFERENCE.get(s.type, 0)))
        rated = [s for s in self.severity if s.rating is not None]
        if rated:
            return max(
                rated, key=lambda s: (_RATING_RANK[s.rating or "none"], s.type == "DATABASE")
            )
        return None


def normalize_name(ecosystem: str, name: str) -> str:
    """Package names as :class:`Affected` stores them: PEP 503 for PyPI, else lower-case."""
    if ecosystem.lower() == "pypi":
        return canonicalize_name(name)
    return name.lower()


# --- JSON-compatible copy ---------------------------------------------------------------------


def _iso(value: datetime | date) -> str:
    if isinstance(value, datetime):
        offset = value.utcoffset()
        text = value.isoformat()
        if offset == timedelta(0):
            text = text[: -len("+00:00")] + "Z"
        return text
    return value.isoformat()


def _jsonable(obj: object, source: str) -> Any:
    """A JSON-compatible deep copy of ``obj`` (datetimes -> ISO strings), size-bounded."""
    budget = [_MAX_NODES]

    def fail(trail: tuple[str | int, ...], problem: str) -> OsvError:
        path = ""
        for step in trail:
            path += f"[{step}]" if isinstance(step, int) else (f".{step}" if path else step)
        return _fail(source, path, problem)

    def walk(value: object, trail: tuple[str | int, ...]) -> Any:
        t = type(value)
        if t is str or t is int or t is bool or value is None:
            return value
        if len(trail) > _MAX_DEPTH:
            raise fail(trail, "nested too deeply")
        if isinstance(value, Mapping):
            budget[0] -= len(value) + 1
            if budget[0] < 0:
                raise fail((), "record is too large (too many values)")
            out: dict[str, Any] = {}
            for k, v in value.items():
                if type(k) is not str:
                    raise fail(trail, f"object keys must be strings, got {k!r}")
                tv = type(v)
                if tv is str or tv is int or tv is bool or v is None:
                    out[k] = v
                else:
                    out[k] = walk(v, (*trail, k))
            return out
        if isinstance(value, list | tuple):
            budget[0] -= len(value) + 1
            if budget[0] < 0:
                raise fail((), "record is too large (too many values)")
            if all(type(v) is str for v in value):
                return list(value)
            return [walk(v, (*trail, i)) for i, v in enumerate(value)]
        if isinstance(value, str | int):  # subclasses (bool is an int)
            return value
        if isinstance(value, float):
            if not math.isfinite(value):
                raise fail(trail, "numbers must be finite")
            return value
        if isinstance(value, datetime | date):
            return _iso(value)
        raise fail(trail, f"not a JSON value ({type(value).__name__})")

    return walk(obj, ())


# --- field readers ----------------------------------------------------------------------------

_DATETIME: Final = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:[Tt ](\d{2}):(\d{2}):(\d{2})(?:[.,](\d+))?\s*([Zz]|[+-]\d{2}(?::?\d{2})?)?)?"
)


def parse_datetime(text: str) -> datetime:
    """RFC 3339 timestamp -> aware UTC datetime. No offset means UTC; a bare date is midnight."""
    m = _DATETIME.fullmatch(text.strip())
    if not m:
        raise ValueError(f"not an RFC 3339 timestamp: {text!r}")
    year, month, day, hh, mm, ss, frac, tz = m.groups()
    micro = int((frac or "0")[:6].ljust(6, "0"))
    tzinfo = UTC
    if tz and tz not in "Zz":
        sign = -1 if tz[0] == "-" else 1
        digits = tz[1:].replace(":", "")
        hours, minutes = int(digits[:2]), int(digits[2:] or "0")
        if hours > 23 or minutes > 59:
            raise ValueError(f"bad UTC offset in {text!r}")
        tzinfo = timezone(sign * timedelta(hours=hours, minutes=minutes))
    value = datetime(
        int(year),
        int(month),
        int(day),
        int(hh or 0),
        int(mm or 0),
        min(int(ss or 0), 59),  # RFC 3339 allows a leap second
        micro,
        tzinfo=tzinfo,
    )
    return value.astimezone(UTC)


class _Reader:
    """Typed accessors that raise :class:`OsvError` naming the source and the field path."""

    __slots__ = ("source",)

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, problem: str, hint: str | None = None) -> OsvError:
        return _fail(self.source, path, problem, hint)

    def obj(self, value: object, path: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(path, f"expected an object, got {_kind(value)}")
        return value

    def seq(self, value: object, path: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(path, f"expected a list, got {_kind(value)}")
        return value

    def text(self, value: object, path: str, *, version: bool = False) -> str:
        if not isinstance(value, str):
            hint = "quote version strings in YAML" if version and value is not None else None
            raise self.fail(path, f"expected a string, got {_kind(value)}", hint)
        return value

    def opt_text(self, value: object, path: str) -> str | None:
        return None if value is None else self.text(value, path)

    def texts(self, value: object, path: str, *, version: bool = False) -> tuple[str, ...]:
        items = self.seq(value, path)
        if all(type(v) is str for v in items):
            return tuple(items)
        return tuple(self.text(v, f"{path}[{i}]", version=version) for i, v in enumerate(items))

    def when(self, value: object, path: str) -> datetime:
        text = self.text(value, path)
        try:
            return parse_datetime(text)
        except ValueError as exc:
            raise self.fail(path, str(exc)) from None

    def opt_when(self, value: object, path: str) -> datetime | None:
        return None if value is None else self.when(value, path)


def _kind(value: object) -> str:
    return {
        type(None): "null",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
    }.get(type(value), type(value).__name__)


def _event(r: _Reader, value: object, path: str) -> Event:
    ev = r.obj(value, path)
    if len(ev) != 1:
        raise r.fail(path, f"an event has exactly one of {', '.join(EVENT_KINDS)}")
    ((kind, val),) = ev.items()
    if kind not in EVENT_KINDS:
        raise r.fail(f"{path}.{kind}", f"unknown event kind (expected one of {EVENT_KINDS})")
    return Event(kind, r.text(val, f"{path}.{kind}", version=True))


def _range(r: _Reader, value: object, path: str) -> Range:
    rng = r.obj(value, path)
    if "events" not in rng:
        raise r.fail(f"{path}.events", "missing")
    events = r.seq(rng["events"], f"{path}.events")
    return Range(
        type=r.text(rng.get("type"), f"{path}.type"),
        events=tuple(_event(r, e, f"{path}.events[{i}]") for i, e in enumerate(events)),
        repo=r.opt_text(rng.get("repo"), f"{path}.repo"),
    )


def _affected(r: _Reader, value: object, path: str, severities: list[Severity]) -> Affected:
    aff = r.obj(value, path)
    ecosystem = name = ""
    purl = None
    if aff.get("package") is not None:
        pkg = r.obj(aff["package"], f"{path}.package")
        ecosystem = r.text(pkg.get("ecosystem"), f"{path}.package.ecosystem")
        name = normalize_name(ecosystem, r.text(pkg.get("name"), f"{path}.package.name"))
        purl = r.opt_text(pkg.get("purl"), f"{path}.package.purl")
    ranges = r.seq(aff.get("ranges"), f"{path}.ranges")
    severities.extend(_severities(r, aff.get("severity"), f"{path}.severity"))
    return Affected(
        ecosystem=ecosystem,
        name=name,
        ranges=tuple(_range(r, x, f"{path}.ranges[{i}]") for i, x in enumerate(ranges)),
        versions=r.texts(aff.get("versions"), f"{path}.versions", version=True),
        purl=purl,
    )


# --- severity ---------------------------------------------------------------------------------


def _rating(text: str) -> str | None:
    word = text.strip().lower()
    word = _RATING_ALIASES.get(word, word)
    return word if word in _RATING_RANK else None


def _v2_rating(score: float) -> str:
    # NVD CVSS v2 bands: low 0.0-3.9, medium 4.0-6.9, high 7.0-10.0
    if score < 4.0:
        return "low"
    return "medium" if score < 7.0 else "high"


def severity_from_vector(kind: str, vector: str) -> Severity:
    """Score one OSV ``severity`` entry; unparseable vectors keep score and rating ``None``."""
    text = vector.strip()
    try:
        if kind == "CVSS_V3":
            c3 = cvss.CVSS3(text)
            return Severity(kind, str(c3.clean_vector()), float(c3.base_score), _v3_rating(c3))
        if kind == "CVSS_V4":
            c4 = cvss.CVSS4(text)
            return Severity(
                kind, str(c4.clean_vector()), float(c4.base_score), str(c4.severity).lower()
            )
        if kind == "CVSS_V2":
            c2 = cvss.CVSS2(text)
            score = float(c2.base_score)
            return Severity(kind, str(c2.clean_vector()), score, _v2_rating(score))
    except Exception:  # the cvss library raises assorted errors on malformed vectors
        return Severity(kind, text, None, None)
    return Severity(kind, text, None, _rating(text))  # e.g. Ubuntu: "medium"


def _v3_rating(c3: Any) -> str:
    return str(c3.severities()[0]).lower()


def _severities(r: _Reader, value: object, path: str) -> list[Severity]:
    out = []
    for i, item in enumerate(r.seq(value, path)):
        entry = r.obj(item, f"{path}[{i}]")
        kind = r.text(entry.get("type"), f"{path}[{i}].type")
        out.append(severity_from_vector(kind, r.text(entry.get("score"), f"{path}[{i}].score")))
    return out


# --- records ----------------------------------------------------------------------------------


def parse_osv(obj: object, source: str = "") -> Advisory:
    """Validate one decoded OSV record; raise :class:`OsvError` naming ``source`` and the field.

    Event values and listed versions are kept as given, even when no ordering can parse them
    (matching skips those). Unknown fields are ignored but kept in :attr:`Advisory.raw`.
    """
    r = _Reader(source)
    rec = r.obj(_jsonable(obj, source), "")
    if not rec.get("id"):
        raise r.fail("id", "missing")
    if rec.get("modified") is None:
        raise r.fail("modified", "missing")
    severities = _severities(r, rec.get("severity"), "severity")
    affected = tuple(
        _affected(r, a, f"affected[{i}]", severities)
        for i, a in enumerate(r.seq(rec.get("affected"), "affected"))
    )
    db = rec.get("database_specific")
    if isinstance(db, Mapping) and isinstance(db.get("severity"), str):
        # GHSA style: "LOW" | "MODERATE" | "HIGH" | "CRITICAL"
        severities.append(Severity("DATABASE", db["severity"], None, _rating(db["severity"])))
    references = []
    for i, item in enumerate(r.seq(rec.get("references"), "references")):
        ref = r.obj(item, f"references[{i}]")
        references.append(
            (
                r.text(ref.get("type"), f"references[{i}].type"),
                r.text(ref.get("url"), f"references[{i}].url"),
            )
        )
    return Advisory(
        id=r.text(rec["id"], "id"),
        aliases=r.texts(rec.get("aliases"), "aliases"),
        summary=r.opt_text(rec.get("summary"), "summary"),
        details=r.opt_text(rec.get("details"), "details"),
        published=r.opt_when(rec.get("published"), "published"),
        modified=r.when(rec["modified"], "modified"),
        withdrawn=r.opt_when(rec.get("withdrawn"), "withdrawn"),
        affected=affected,
        severity=tuple(dict.fromkeys(severities)),  # top-level and per-package may repeat
        references=tuple(references),
        raw=rec,
    )


# --- reading files ----------------------------------------------------------------------------


def _decode(data: bytes, name: str) -> dict[str, Any] | OsvError:
    try:
        if name.lower().endswith(".json"):
            loaded = json.loads(data)
        else:
            loaded = yaml.load(data, Loader=_YamlLoader)  # CSafeLoader / SafeLoader
    except (ValueError, yaml.YAMLError, RecursionError) as exc:
        problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return _fail(name, "", f"cannot decode: {problem}")
    if not isinstance(loaded, dict):
        return _fail(name, "", f"expected an object at the top level, got {_kind(loaded)}")
    try:
        converted: dict[str, Any] = _jsonable(loaded, name)
    except OsvError as exc:
        return exc
    return converted


def _is_record_name(name: str) -> bool:
    parts = PurePosixPath(name).parts
    return (
        bool(parts)
        and not any(p.startswith(".") or p == "__MACOSX" for p in parts)
        and name.lower().endswith(RECORD_SUFFIXES)
    )


def _read_file(path: Path, name: str) -> dict[str, Any] | OsvError:
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_RECORD_BYTES + 1)
    except OSError as exc:
        return _fail(name, "", f"cannot read: {exc.strerror or exc}")
    if len(data) > MAX_RECORD_BYTES:
        return _fail(name, "", f"larger than {MAX_RECORD_BYTES} bytes")
    return _decode(data, name)


def _iter_zip(path: Path) -> Iterator[tuple[str, dict[str, Any] | OsvError]]:
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise OsvError(f"cannot open OSV archive {path.name}: {exc}") from None
    with zf:
        for info in zf.infolist():
            name = info.filename
            if info.is_dir() or not _is_record_name(name):
                continue
            if info.file_size > MAX_RECORD_BYTES:
                yield name, _fail(name, "", f"larger than {MAX_RECORD_BYTES} bytes")
                continue
            try:
                with zf.open(info) as fh:
                    data = fh.read(MAX_RECORD_BYTES + 1)
            except (OSError, zipfile.BadZipFile, NotImplementedError, RuntimeError) as exc:
                yield name, _fail(name, "", f"cannot read archive member: {exc}")
                continue
            if len(data) > MAX_RECORD_BYTES:
                yield name, _fail(name, "", f"larger than {MAX_RECORD_BYTES} bytes")
                continue
            yield name, _decode(data, name)


def iter_records(path: Path) -> Iterator[tuple[str, dict[str, Any] | OsvError]]:
    """Yield ``(source name, decoded record)`` or ``(source name, OsvError)`` per record file.

    ``path`` is a directory (searched recursively for ``*.json``/``*.yaml``/``*.yml``, skipping
    hidden files and directories; named by their path relative to it, in sorted order), a single
    record file (named by its file name) or a ``.zip`` archive (members at any depth, read one at
    a time in memory, in archive order; named by member path). Decoding errors are yielded, never
    raised; an unusable ``path`` itself (missing, wrong suffix, not a zip) raises
    :class:`OsvError`.
    """
    if path.is_dir():
        found: list[tuple[str, Path]] = []
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]  # prune .git etc.
            base = Path(dirpath)
            for filename in filenames:
                rel = (base / filename).relative_to(path).as_posix()
                if _is_record_name(rel):
                    found.append((rel, base / filename))
        for rel, file in sorted(found):
            yield rel, _read_file(file, rel)
        return
    if not path.is_file():
        raise OsvError(f"OSV source {path} does not exist")
    if path.suffix.lower() == ".zip":
        yield from _iter_zip(path)
        return
    if not path.name.lower().endswith(RECORD_SUFFIXES):
        raise OsvError(
            f"OSV source {path.name} is not a record file",
            "give a directory, a .zip archive or a .json/.yaml file",
        )
    yield path.name, _read_file(path, path.name)
