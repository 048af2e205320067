"""Custom rules in CEL: the documented examples, compile-time checks with positions, bounded
cost, and evaluation errors that are always CelError."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from stockade.core.policy.cel import (
    FACT_TYPES,
    MAX_EXPRESSION_CHARS,
    CelError,
    CelProgram,
    compile_rule,
    facts_for,
)

UPLOADED = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
CRITICAL_UNFIXED = {"id": "GHSA-1", "severity": "critical", "score": 9.8, "status": "affected"}
HIGH_FIXED = {
    "id": "PYSEC-2",
    "severity": "High",
    "score": 7.5,
    "status": "under_investigation",
    "fixed": ("2.0",),
}
CLEARED = {"id": "PYSEC-3", "severity": "critical", "status": "not_affected", "fixed": ["2.0"]}
MALICIOUS = {"rule": "exfil-env", "severity": "high", "tier": "malicious", "message": "posts env"}
SUSPICIOUS = {"rule": "obfuscated", "severity": "medium", "tier": "suspicious", "message": "b64"}


def facts(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "Some_Pkg",
        "version": "1.0",
        "filename": "some_pkg-1.0-py3-none-any.whl",
        "kind": "wheel",
        "size": 12_345,
        "upload_time": UPLOADED,
        "age_days": 10.0,
        "yanked": False,
        "license": "MIT",
        "vulns": [],
        "findings": [],
        "provenance": True,
        "index": "pypi",
    }
    base.update(kw)
    return facts_for(**base)


def check(expression: str, **kw: Any) -> bool:
    return compile_rule(expression).evaluate(facts(**kw))


# -- the documented examples -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "matching", "other"),
    [
        (
            'kind == "sdist" && size > 50000000',
            {"kind": "sdist", "size": 60_000_000},
            {"kind": "sdist", "size": 40_000_000},
        ),
        (
            'vulns.exists(v, v.severity == "critical" && v.fixed.size() == 0)',
            {"vulns": [HIGH_FIXED, CRITICAL_UNFIXED]},
            {"vulns": [HIGH_FIXED, CLEARED]},
        ),
        (
            'name.startsWith("internal-") && index != "internal"',
            {"name": "Internal_Tools", "index": "pypi"},
            {"name": "internal-tools", "index": "internal"},
        ),
        (
            "age_days >= 0.0 && age_days < 3.0 && !provenance",
            {"age_days": 1.5, "provenance": None},
            {"age_days": None, "provenance": None},
        ),
        ('license.contains("GPL")', {"license": "LGPL-2.1-only OR MIT"}, {"license": None}),
        (
            'max_severity in ["high", "critical"]',
            {"vulns": [HIGH_FIXED]},
            {"vulns": [CLEARED, {"id": "X", "severity": "low", "status": "affected"}]},
        ),
        (
            'findings.exists(f, f.tier == "malicious")',
            {"findings": [SUSPICIOUS, MALICIOUS]},
            {"findings": [SUSPICIOUS]},
        ),
        (
            r'filename.matches("^[a-z_]+-[0-9.]+\\.tar\\.gz$")',
            {"filename": "some_pkg-1.0.tar.gz"},
            {"filename": "some_pkg-1.0-py3-none-any.whl"},
        ),
        (
            'upload_time > timestamp("2026-11-01T00:00:00Z")',
            {"upload_time": UPLOADED},
            {"upload_time": None},
        ),
        ("yanked || size < 0", {"size": None}, {}),
    ],
)
def test_examples_match_and_do_not_match(
    expression: str, matching: dict[str, Any], other: dict[str, Any]
) -> None:
    program = compile_rule(expression)
    assert program.evaluate(facts(**matching)) is True
    assert program.evaluate(facts(**other)) is False


def test_facts_have_the_documented_types_and_sentinels() -> None:
    f = facts(
        version=None,
        size=None,
        upload_time=None,
        age_days=None,
        license=None,
        provenance=None,
        kind="egg",
        vulns=[{"id": "X", "severity": None, "score": None}],
        findings=[{"rule": "r", "tier": "suspicious"}],
    )
    assert set(f) == set(FACT_TYPES)
    assert f["name"] == "some-pkg"
    assert (f["version"], f["size"], f["age_days"], f["license"]) == ("", -1, -1.0, "")
    assert f["upload_time"] == datetime(1970, 1, 1, tzinfo=UTC)
    assert (f["kind"], f["provenance"], f["max_severity"]) == ("other", False, "")
    assert f["vulns"] == [{"id": "X", "severity": "", "score": -1.0, "status": "", "fixed": []}]
    assert f["findings"] == [{"rule": "r", "severity": "", "tier": "suspicious", "message": ""}]
    unknown = 'upload_time == timestamp(0) && version == "" && vulns[0].score < 0.0'
    assert check(unknown, upload_time=None, version=None, vulns=[{"id": "X"}])


def test_max_severity_counts_only_open_vulnerabilities_with_a_rating() -> None:
    assert facts(vulns=[CLEARED])["max_severity"] == ""
    assert facts(vulns=[HIGH_FIXED, CLEARED])["max_severity"] == "high"
    assert facts(vulns=[HIGH_FIXED, CRITICAL_UNFIXED])["max_severity"] == "critical"
    assert facts(vulns=[{"id": "X", "status": "affected"}])["max_severity"] == ""


def test_timestamps_are_utc_whatever_the_input_zone() -> None:
    east = UPLOADED.astimezone(timezone(timedelta(hours=5)))
    naive = UPLOADED.replace(tzinfo=None)
    rule = 'upload_time == timestamp("2026-11-20T12:00:00Z")'
    assert check(rule, upload_time=east)
    assert check(rule, upload_time=naive)


def test_unicode_in_strings_and_facts() -> None:
    assert check('license == "Licence libre ✓" && license.size() == 15', license="Licence libre ✓")
    assert check('filename.matches("^pkg-ü.*")', filename="pkg-über-1.0.tar.gz")
    with pytest.raises(CelError, match=r"undeclared reference to 'nme' \(line 1, column 10\)"):
        compile_rule('"ñññ" == nme')  # columns count characters, not bytes


# -- compile-time checks -----------------------------------------------------------------------


def test_syntax_error_names_the_position() -> None:
    with pytest.raises(CelError) as err:
        compile_rule('kind == "sdist" &&\n  size > )')
    message = str(err.value)
    assert message.startswith("custom rule: Syntax error: mismatched input ')'")
    assert "(line 2, column 10)" in message
    assert "expecting a value" in message
    assert (err.value.line, err.value.column) == (2, 10)


def test_unknown_fact_is_rejected_at_compile_time_with_the_list_of_facts() -> None:
    with pytest.raises(CelError) as err:
        compile_rule('nme == "requests"')
    assert str(err.value) == (
        "custom rule: undeclared reference to 'nme' (line 1, column 1); facts are: "
        + ", ".join(FACT_TYPES)
    )
    with pytest.raises(CelError, match=r"undeclared reference to 'shout' \(line 1, column 11\)"):
        compile_rule("name.shout() == 1")


def test_type_errors_are_caught_at_compile_time() -> None:
    with pytest.raises(CelError) as err:
        compile_rule('size > "x"')
    assert str(err.value) == (
        "custom rule: found no matching overload for '_>_' applied to '(int, string)' "
        "(line 1, column 6)"
    )
    with pytest.raises(CelError, match=r"'_==_' applied to '\(string, int\)' \(line 1, column 27"):
        compile_rule("findings.exists(f, f.tier == 1)")  # findings are map(string, string)


@pytest.mark.parametrize("expression", ["size + 1", "name", "vulns", '{"a": yanked}'])
def test_non_bool_result_is_rejected(expression: str) -> None:
    with pytest.raises(CelError, match="not a bool"):
        compile_rule(expression)


def test_dyn_result_is_checked_when_evaluated() -> None:
    program = compile_rule("vulns[0].score")  # map(string, dyn): the checker cannot tell
    with pytest.raises(CelError, match=r"the result is a double \(9\.8\), not a bool"):
        program.evaluate(facts(vulns=[CRITICAL_UNFIXED]))


def test_empty_and_over_long_expressions_are_rejected() -> None:
    with pytest.raises(CelError, match="empty"):
        compile_rule("  \n")
    longest = "yanked" + " || yanked" * ((MAX_EXPRESSION_CHARS - 6) // 10)
    assert len(longest) <= MAX_EXPRESSION_CHARS
    assert compile_rule(longest).evaluate(facts()) is False
    with pytest.raises(CelError, match=r"2001 characters long, the limit is 2000"):
        compile_rule("yanked" + " " * (MAX_EXPRESSION_CHARS - 6) + "!")


@pytest.mark.parametrize(
    "expression",
    [
        "(" * 500 + "yanked" + ")" * 500,
        "[" * 500 + "]" * 500 + " == []",
        "size" + " + 1" * 40 + " > 0",
        "name" + ".size()" * 40 + " > 0",
    ],
)
def test_deep_nesting_is_rejected(expression: str) -> None:
    with pytest.raises(CelError, match="nested too deeply"):
        compile_rule(expression)


def test_deep_nesting_does_not_crash_the_interpreter() -> None:
    # In a child process, so that a crash in the C++ library would fail this test rather than
    # take the test run down with it.
    code = (
        "from stockade.core.policy.cel import CelError, compile_rule\n"
        "for n in (33, 100, 500, 999):\n"
        "    for shape in ('(' * n + 'yanked' + ')' * n, '!' * n + 'yanked',"
        " '-' * n + '1 == 1', '[' * n + ']' * n + ' == []'):\n"
        "        try:\n"
        "            compile_rule(shape)\n"
        "        except CelError:\n"
        "            pass\n"
        "print('survived')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "survived"


def test_compiled_program_is_a_value() -> None:
    a, b = compile_rule("yanked"), CelProgram("yanked")
    assert a == b
    assert hash(a) == hash(b)
    assert repr(a) == "CelProgram(expression='yanked')"


# -- evaluation errors -------------------------------------------------------------------------


def test_evaluation_errors_are_cel_errors() -> None:
    with pytest.raises(CelError, match="evaluation failed: divide by zero"):
        check("size / (size - size) > 1")
    with pytest.raises(CelError, match=r"Key not found in map.*vulns entries have id, severity"):
        check('vulns.exists(v, v.severty == "high")', vulns=[CRITICAL_UNFIXED])
    with pytest.raises(CelError, match="No matching overloads"):
        check('vulns.exists(v, v.score > "x")', vulns=[CRITICAL_UNFIXED])  # dyn: found at run
    with pytest.raises(CelError, match="invalid regular expression"):
        check('name.matches("(")')
    with pytest.raises(CelError, match=r"evaluation failed.*int too big"):
        check("size > 0", size=2**70)


def test_facts_that_are_missing_or_of_the_wrong_type_are_cel_errors() -> None:
    program = compile_rule("size > 0")
    with pytest.raises(CelError, match="build them with facts_for"):
        program.evaluate({"name": "x"})
    for size in ("big", 1.5, None, object()):
        with pytest.raises(CelError, match="evaluation failed"):
            program.evaluate({"size": size})
    with pytest.raises(CelError, match="evaluation failed"):
        compile_rule("vulns.size() > 0").evaluate({"vulns": ({"id": "x"},)})


def test_the_iteration_budget_stops_runaway_comprehensions() -> None:
    many = [dict(MALICIOUS, rule=str(i)) for i in range(200)]
    program = compile_rule('findings.all(a, findings.all(b, a.rule != ""))')  # 200 x 200
    with pytest.raises(CelError, match=r"Iteration budget exceeded \(10,000 iterations"):
        program.evaluate(facts(findings=many))
    assert compile_rule("findings.all(a, a.tier != '')").evaluate(facts(findings=many))


def test_two_thousand_evaluations() -> None:
    program = compile_rule(
        'vulns.exists(v, v.severity == "critical" && v.fixed.size() == 0) '
        '|| (kind == "sdist" && size > 50000000) '
        '|| name.matches("^evil-[0-9]+$") '
        '|| findings.exists(f, f.tier == "malicious")'
    )
    batch = [
        facts(
            name=f"pkg-{i}" if i % 100 else f"evil-{i}",
            size=i * 1000,
            vulns=[HIGH_FIXED, CRITICAL_UNFIXED] if i % 250 == 0 else [HIGH_FIXED],
            findings=[SUSPICIOUS],
        )
        for i in range(2000)
    ]
    hits = [i for i, f in enumerate(batch) if program.evaluate(f)]
    assert hits == sorted({*range(0, 2000, 100), *range(0, 2000, 250)})  # evil-N, critical
