"""Policy documents: validation with line numbers, and each rule's decision with its reason."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from stockade.core.policy import FileFacts, PolicyError, VulnFact, evaluate, parse_policy
from stockade.core.policy.model import member_block

NOW = datetime(2026, 11, 26, tzinfo=UTC)
CRIT = VulnFact("GHSA-1", "critical", 9.8, "affected", ("2.0",), NOW - timedelta(days=30))
LOW = VulnFact("PYSEC-2", "low", 3.1, "affected", (), NOW - timedelta(days=30))
FRESH = VulnFact("PYSEC-3", "high", None, "affected", ("2.0",), NOW - timedelta(days=1))
CLEARED = VulnFact("PYSEC-4", "critical", 9.1, "not_affected", ("2.0",), None)


def facts(**kw: object) -> FileFacts:
    base: dict[str, object] = {"project": "pkg", "version": "1.0", "filename": "pkg-1.0.tar.gz"}
    base.update(kw)
    return FileFacts(**base)  # type: ignore[arg-type]


def test_vulnerability_rule_thresholds_fixed_grace_and_curation() -> None:
    pol = parse_policy('[[rules]]\nkind = "vulnerabilities"\nseverity = "high"\n')
    d = evaluate(pol, facts(vulns=(CRIT, LOW, CLEARED)), NOW)
    assert not d.allowed
    [reason] = d.blocks
    assert reason.message == "GHSA-1 (critical, CVSS 9.8) ≥ high; fixed in 2.0"
    assert "rule 1 (vulnerabilities)" in d.summary()
    assert evaluate(pol, facts(vulns=(LOW, CLEARED)), NOW).allowed  # curated not_affected
    only_fixed = parse_policy(
        '[[rules]]\nkind = "vulnerabilities"\nseverity = "any"\nonly_fixed = true\n'
    )
    assert evaluate(only_fixed, facts(vulns=(LOW,)), NOW).allowed
    grace = parse_policy('[[rules]]\nkind = "vulnerabilities"\nseverity = "any"\ngrace_days = 7\n')
    assert evaluate(grace, facts(vulns=(FRESH,)), NOW).allowed
    assert not evaluate(grace, facts(vulns=(FRESH,)), NOW + timedelta(days=7)).allowed
    unknown = VulnFact("PYSEC-5", None, None, "affected")
    assert not evaluate(
        parse_policy('[[rules]]\nkind = "vulnerabilities"\n'), facts(vulns=(unknown,)), NOW
    ).allowed
    assert evaluate(pol, facts(vulns=(unknown,)), NOW).allowed  # unknown severity < high


def test_names_rule_globs_specifiers_and_allow_only() -> None:
    pol = parse_policy(
        '[[rules]]\nkind = "names"\ndeny = ["evil-*", "requests<2.20"]\n'
        'allow = ["requests", "Urllib3>=2"]\nallow_only = true\n'
    )
    assert not evaluate(pol, facts(project="evil-thing"), NOW).allowed
    assert not evaluate(pol, facts(project="requests", version="2.19.0"), NOW).allowed
    assert evaluate(pol, facts(project="requests", version="2.31.0"), NOW).allowed
    assert evaluate(pol, facts(project="urllib3", version="2.0.7"), NOW).allowed
    d = evaluate(pol, facts(project="urllib3", version="1.26.0"), NOW)
    assert d.blocks[0].message == (
        "urllib3 1.26.0 is not on the allow-list (allow_only); an admin can approve it"
    )
    assert d.blocks[0].requestable
    assert not evaluate(pol, facts(project="numpy"), NOW).allowed
    # an approval adds to the allow-list; deny patterns still win
    assert evaluate(pol, facts(project="numpy", approved=True), NOW).allowed
    denied = evaluate(pol, facts(project="evil-thing", approved=True), NOW)
    assert not denied.allowed
    assert not denied.blocks[0].requestable


def test_age_yanked_and_warn_mode() -> None:
    pol = parse_policy(
        '[[rules]]\nkind = "age"\nmin_days = 7\n\n[[rules]]\nkind = "yanked"\n'
        '\n[[rules]]\nkind = "vulnerabilities"\nmode = "warn"\n'
    )
    young = facts(upload_time=NOW - timedelta(days=2))
    d = evaluate(pol, young, NOW)
    assert not d.allowed
    assert d.blocks[0].message == "published 2.0 days ago, quarantine is 7 days"
    assert evaluate(pol, facts(upload_time=NOW - timedelta(days=8)), NOW).allowed
    assert not evaluate(pol, facts(yanked=True), NOW).allowed
    assert pol.hides_yanked
    warned = evaluate(pol, facts(vulns=(CRIT,)), NOW)
    assert warned.allowed
    assert warned.warnings[0].mode == "warn"
    serve = parse_policy('[[rules]]\nkind = "yanked"\naction = "serve"\n')
    assert evaluate(serve, facts(yanked=True), NOW).allowed
    assert not serve.hides_yanked


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[rules]]\nkind = "vulnerabilities"\nseverity = "hgh"\n', "rule 1 (line 1): severity"),
        ('[[rules]]\nkind = "age"\n\n[[rules]]\nkind = "nope"\n', "rule 2 (line 4): unknown kind"),
        ('[[rules]]\nkind = "age"\nmin_days = "7"\n', "min_days must be a int or float"),
        ('[[rules]]\nkind = "age"\nmin_day = 7\n', "unknown option(s) ['min_day']"),
        ('[[rules]]\nkind = "names"\ndeny = ["x<<2"]\n', "invalid version specifier"),
        ('[[rules]]\nkind = "yanked"\nmode = "audit"\n', "mode must be enforce or warn"),
        ("rules = 3\n", "'rules' must be an array"),
        ('[[rules]\nkind = "age"\n', "not valid TOML"),
        ("[policy]\nx = 1\n", "unknown top-level key"),
        ('blocked_files = "gone"\n', 'blocked_files must be "yanked" or "hidden"'),
    ],
)
def test_malformed_policies_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(PolicyError) as err:
        parse_policy(text)
    assert message in err.value.message


def test_empty_policy_allows_everything() -> None:
    assert evaluate(parse_policy(""), facts(vulns=(CRIT,), yanked=True), NOW).allowed


def test_blocked_files_are_listed_by_default_and_hidden_on_request() -> None:
    assert parse_policy("").show_blocked
    assert parse_policy('blocked_files = "yanked"\n').show_blocked
    assert not parse_policy('blocked_files = "hidden"\n').show_blocked


def test_a_member_block_reads_as_the_member_s_reason() -> None:
    d = member_block("prod-mirror", "rule 1 (names): x is denied")
    assert not d.allowed
    assert d.summary() == "blocked by rule 1 (names): x is denied (policy of index 'prod-mirror')"


def test_unrated_advisories_count_only_when_asked() -> None:
    unrated = VulnFact("PYSEC-1", None, None, "affected", ("2.0",))
    lax = parse_policy('[[rules]]\nkind = "vulnerabilities"\nseverity = "high"\n')
    assert evaluate(lax, facts(vulns=(unrated,)), NOW).allowed
    strict = parse_policy(
        '[[rules]]\nkind = "vulnerabilities"\nseverity = "high"\nunknown_severity = "block"\n'
    )
    d = evaluate(strict, facts(vulns=(unrated,)), NOW)
    assert not d.allowed
    assert d.blocks[0].message == "PYSEC-1 (severity unknown) ≥ high; fixed in 2.0"


def test_kind_of_conda_records_is_conda_whatever_the_container() -> None:
    assert facts(filename="x-1.0-py_0.tar.bz2").kind == "sdist"  # a PyPI file of that name
    conda = facts(filename="x-1.0-py_0.tar.bz2", ecosystem="conda")
    assert conda.kind == "conda"
    assert facts(filename="x-1.0-py_0.conda", ecosystem="conda").kind == "conda"
