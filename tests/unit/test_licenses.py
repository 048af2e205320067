"""The license rule: reading licenses from core metadata, and allow/deny matching over SPDX."""

from __future__ import annotations

import re

import pytest

from stockade.core.policy import licenses
from stockade.core.policy.licenses import (
    CLASSIFIER_LICENSES,
    LICENSE_ALIASES,
    MAX_ALTERNATIVES,
    LicenseInfo,
    LicenseMatcher,
    LicenseVerdict,
    license_from_fields,
    license_from_metadata,
    normalize_expression,
)

MIT_CLASSIFIER = "License :: OSI Approved :: MIT License"
APACHE_CLASSIFIER = "License :: OSI Approved :: Apache Software License"

MIT_TEXT = """MIT License

Copyright (c) 2024 Jane Doe

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
"""

APACHE_TEXT = """
                                 Apache License
                           Version 2.0, January 2004
                        http://www.apache.org/licenses/

   TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION
"""

BSD3_TEXT = """BSD 3-Clause License

Copyright (c) 2013-2024, Example Project
All rights reserved.

Redistribution and use in source and binary forms, with or without
"""

GPL3_TEXT = """                    GNU GENERAL PUBLIC LICENSE
                       Version 3, 29 June 2007

 Copyright (C) 2007 Free Software Foundation, Inc. <https://fsf.org/>
"""

LGPL21_TEXT = """                  GNU LESSER GENERAL PUBLIC LICENSE
                       Version 2.1, February 1999
"""

METADATA_2_4 = """\
Metadata-Version: 2.4
Name: fancylib
Version: 1.2.0
Summary: A fancy library
Author-email: Jane Doe <jane@example.org>
License-Expression: mit OR apache-2.0
License-File: LICENSE-MIT
License-File: LICENSE-APACHE
Classifier: Programming Language :: Python :: 3
Classifier: License :: OSI Approved :: BSD License
Requires-Python: >=3.9
Requires-Dist: attrs>=23
Description-Content-Type: text/markdown

# fancylib

License: GPL-3.0-only (this line is the description, not a header)
"""

METADATA_2_1 = """\
Metadata-Version: 2.1
Name: oldlib
Version: 0.9
Summary: An older library
Home-page: https://example.org/oldlib
Author: John Doe
Author-email: john@example.org
License: UNKNOWN
Platform: UNKNOWN
Classifier: Development Status :: 5 - Production/Stable
Classifier: Intended Audience :: Developers
Classifier: License :: OSI Approved :: GNU Lesser General Public License v3 or later (LGPLv3+)
Classifier: License :: OSI Approved :: MIT License
Classifier: Operating System :: OS Independent
Classifier: Programming Language :: Python :: 3
Requires-Python: >=3.6
Description-Content-Type: text/x-rst

oldlib
======
"""

# setuptools writes a multi-line License field with an 8-space continuation indent
METADATA_FOLDED_LICENSE = (
    "Metadata-Version: 2.1\n"
    "Name: textlib\n"
    "Version: 1.0\n"
    "License: MIT License\n"
    "        \n"
    "        Copyright (c) 2020 Someone\n"
    "        \n"
    "        Permission is hereby granted, free of charge, to any person obtaining a copy\n"
    "Classifier: License :: OSI Approved :: Apache Software License\n"
    "\n"
    "body\n"
)


def info(expression: str | None, raw: str | None, source: str | None) -> LicenseInfo:
    return LicenseInfo(expression=expression, raw=raw, source=source)


# -- reading: precedence ------------------------------------------------------------------------


def test_license_expression_wins_over_license_field_and_classifiers() -> None:
    got = license_from_fields("mit or apache-2.0", "GPLv3", [MIT_CLASSIFIER, APACHE_CLASSIFIER])
    assert got == info("MIT OR Apache-2.0", "mit or apache-2.0", "License-Expression")


def test_license_field_wins_over_classifiers() -> None:
    got = license_from_fields(None, "BSD-3-Clause", [MIT_CLASSIFIER])
    assert got == info("BSD-3-Clause", "BSD-3-Clause", "License")


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("MIT", "MIT"),
        ("mit OR Apache-2.0", "MIT OR Apache-2.0"),
        ("GPL-2.0+", "GPL-2.0-or-later"),
        ("GPL-2.0", "GPL-2.0-only"),
        ("gpl-2.0-only with classpath-exception-2.0", "GPL-2.0-only WITH Classpath-exception-2.0"),
        ("(MIT)", "MIT"),
        ("MIT AND (Apache-2.0 AND BSD-2-Clause)", "MIT AND Apache-2.0 AND BSD-2-Clause"),
        ("(MIT OR Apache-2.0) AND Zlib", "(MIT OR Apache-2.0) AND Zlib"),
        ("licenseref-Acme-EULA", "LicenseRef-Acme-EULA"),
        ("  MIT\n  OR\tISC ", "MIT OR ISC"),
    ],
)
def test_license_expression_is_normalized(text: str, normalized: str) -> None:
    assert license_from_fields(text, None, []).expression == normalized
    assert normalize_expression(text) == normalized


@pytest.mark.parametrize(
    "text",
    ["Apache 2.0", "MIT OR", "MIT WITH Apache-2.0", "Foo-1.0", "(MIT", "Classpath-exception-2.0"],
)
def test_unparseable_license_expression_is_unknown_and_does_not_fall_back(text: str) -> None:
    got = license_from_fields(text, "MIT", [MIT_CLASSIFIER])
    assert got == info(None, text, "License-Expression")
    assert normalize_expression(text) is None


@pytest.mark.parametrize("absent", [None, "", "UNKNOWN", "unknown", "None", "  UNKNOWN  "])
def test_absent_values_fall_through(absent: str | None) -> None:
    assert license_from_fields(absent, absent, [MIT_CLASSIFIER]) == info(
        "MIT", MIT_CLASSIFIER, "classifier"
    )
    assert license_from_fields(absent, absent, []) == info(None, None, None)


# -- reading: the License field -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("MIT", "MIT"),
        ("Apache-2.0", "Apache-2.0"),
        ("BSD-3-Clause", "BSD-3-Clause"),
        ("apache-2.0 OR mit", "Apache-2.0 OR MIT"),
        ("Apache 2.0", "Apache-2.0"),
        ("Apache License 2.0", "Apache-2.0"),
        ("Apache License, Version 2.0", "Apache-2.0"),
        ("Apache Software License", "Apache-2.0"),
        ("http://www.apache.org/licenses/LICENSE-2.0", "Apache-2.0"),
        ("MIT License", "MIT"),
        ("MIT license", "MIT"),
        ("The MIT License (MIT)", "MIT"),
        ("BSD", "BSD-3-Clause"),
        ("BSD License", "BSD-3-Clause"),
        ("new BSD license", "BSD-3-Clause"),
        ("BSD-3-Clause License", "BSD-3-Clause"),
        ("BSD (2-clause)", "BSD-2-Clause"),
        ("Simplified BSD", "BSD-2-Clause"),
        ("GPL", "GPL-1.0-or-later"),
        ("GPLv2", "GPL-2.0-only"),
        ("GPLv2+", "GPL-2.0-or-later"),
        ("GPLv3", "GPL-3.0-only"),
        ("GPL-3", "GPL-3.0-only"),
        ("GPLv3+", "GPL-3.0-or-later"),
        ("GNU General Public License v3 (GPLv3)", "GPL-3.0-only"),
        ("LGPL", "LGPL-2.0-or-later"),
        ("LGPLv2.1", "LGPL-2.1-only"),
        ("LGPLv3+", "LGPL-3.0-or-later"),
        ("AGPLv3", "AGPL-3.0-only"),
        ("MPL 2.0", "MPL-2.0"),
        ("Mozilla Public License 2.0", "MPL-2.0"),
        ("ISC", "ISC"),
        ("ISC License", "ISC"),
        ("PSF", "PSF-2.0"),
        ("Python Software Foundation License", "PSF-2.0"),
        ("ZPL 2.1", "ZPL-2.1"),
        ("Public Domain", "LicenseRef-Public-Domain"),
        ("CC0 1.0 Universal", "CC0-1.0"),
        ("The Unlicense", "Unlicense"),
        ("Proprietary", "LicenseRef-Proprietary"),
        ("Boost Software License 1.0", "BSL-1.0"),
        ("zlib/libpng", "Zlib"),
        ("  MIT License.  ", "MIT"),
    ],
)
def test_license_field_ids_expressions_and_aliases(text: str, expected: str) -> None:
    assert license_from_fields(None, text, []) == info(expected, text.strip(), "License")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (MIT_TEXT, "MIT"),
        (APACHE_TEXT, "Apache-2.0"),
        (BSD3_TEXT, "BSD-3-Clause"),
        (GPL3_TEXT, "GPL-3.0-only"),
        (LGPL21_TEXT, "LGPL-2.1-only"),
        ("Apache License\n==============\nVersion 2.0, January 2004\n", "Apache-2.0"),
    ],
)
def test_full_license_text_in_license_field(text: str, expected: str) -> None:
    got = license_from_fields(None, text, [])
    assert got.expression == expected
    assert got.source == "License"
    assert got.raw == text.strip()


@pytest.mark.parametrize(
    "text",
    [
        "Copyright (c) 2020 Someone\n\nPermission is hereby granted, free of charge, to any",
        "Licensed under the terms in LICENSE.txt\nMIT License",
        "MIT License, except src/vendored which is GPL",
        "Dual licensed under MIT and the Apache License",
        "Python",  # PSF or CNRI? not guessed
        "MPL",  # which version?
    ],
)
def test_unrecognized_license_field_is_unknown(text: str) -> None:
    assert license_from_fields(None, text, []) == info(None, text, "License")


def test_unrecognized_license_field_falls_back_to_classifiers() -> None:
    got = license_from_fields(None, "see LICENSE file", [MIT_CLASSIFIER])
    assert got == info("MIT", MIT_CLASSIFIER, "classifier")


# -- reading: classifiers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("classifier", "expected"),
    [
        ("License :: OSI Approved :: MIT License", "MIT"),
        ("License :: OSI Approved :: Apache Software License", "Apache-2.0"),
        ("License :: OSI Approved :: BSD License", "BSD-3-Clause"),
        ("License :: OSI Approved :: GNU General Public License v2 (GPLv2)", "GPL-2.0-only"),
        (
            "License :: OSI Approved :: GNU General Public License v3 or later (GPLv3+)",
            "GPL-3.0-or-later",
        ),
        ("License :: OSI Approved :: GNU General Public License (GPL)", "GPL-1.0-or-later"),
        (
            "License :: OSI Approved :: GNU Library or Lesser General Public License (LGPL)",
            "LGPL-2.0-or-later",
        ),
        ("License :: OSI Approved :: GNU Affero General Public License v3", "AGPL-3.0-only"),
        ("License :: OSI Approved :: Mozilla Public License 2.0 (MPL 2.0)", "MPL-2.0"),
        ("License :: OSI Approved :: ISC License (ISCL)", "ISC"),
        ("License :: OSI Approved :: Python Software Foundation License", "PSF-2.0"),
        ("License :: OSI Approved :: Zope Public License", "ZPL-2.1"),
        ("License :: OSI Approved :: The Unlicense (Unlicense)", "Unlicense"),
        ("License :: CC0 1.0 Universal (CC0 1.0) Public Domain Dedication", "CC0-1.0"),
        ("License :: OSI Approved :: Boost Software License 1.0 (BSL-1.0)", "BSL-1.0"),
        ("License :: OSI Approved :: zlib/libpng License", "Zlib"),
        ("License :: OSI Approved :: European Union Public Licence 1.2 (EUPL 1.2)", "EUPL-1.2"),
        ("License :: OSI Approved :: Eclipse Public License 2.0 (EPL-2.0)", "EPL-2.0"),
        ("License :: Public Domain", "LicenseRef-Public-Domain"),
        ("License :: Other/Proprietary License", "LicenseRef-Proprietary"),
        ("license ::  osi approved::mit license", "MIT"),  # spacing and case are forgiven
    ],
)
def test_classifier_mapping(classifier: str, expected: str) -> None:
    got = license_from_fields(None, None, ["Programming Language :: Python", classifier])
    assert got.expression == expected
    assert got.source == "classifier"


def test_several_license_classifiers_are_alternatives() -> None:
    got = license_from_fields(
        None,
        None,
        [
            "Programming Language :: Python :: 3",
            MIT_CLASSIFIER,
            "License :: OSI Approved",  # a category: ignored
            APACHE_CLASSIFIER,
            MIT_CLASSIFIER,  # duplicates are dropped
        ],
    )
    assert got == info(
        "MIT OR Apache-2.0",
        f"{MIT_CLASSIFIER}; License :: OSI Approved; {APACHE_CLASSIFIER}; {MIT_CLASSIFIER}",
        "classifier",
    )


def test_vague_classifiers_alone_are_unknown() -> None:
    vague = [
        "License :: OSI Approved",
        "License :: OSI Approved :: Academic Free License (AFL)",
        "License :: Freely Distributable",
        "License :: OSI Approved :: Some Future License",
    ]
    assert license_from_fields(None, None, vague) == info(None, "; ".join(vague), "classifier")


def test_tables_hold_valid_normalized_spdx_ids() -> None:
    mapped = {v for v in CLASSIFIER_LICENSES.values() if v is not None}
    assert len(mapped) >= 40
    for spdx in mapped | set(LICENSE_ALIASES.values()):
        assert normalize_expression(spdx) == spdx, spdx


# -- reading: core metadata ----------------------------------------------------------------------


def test_metadata_2_4_license_expression() -> None:
    got = license_from_metadata(METADATA_2_4)
    assert got == info("MIT OR Apache-2.0", "mit OR apache-2.0", "License-Expression")
    assert license_from_metadata(METADATA_2_4.encode()) == got


def test_metadata_2_1_classifiers_only() -> None:
    got = license_from_metadata(METADATA_2_1.replace("\n", "\r\n").encode())
    assert got == info(
        "LGPL-3.0-or-later OR MIT",
        "License :: OSI Approved :: GNU Lesser General Public License v3 or later (LGPLv3+); "
        "License :: OSI Approved :: MIT License",
        "classifier",
    )


def test_metadata_multi_line_license_text() -> None:
    got = license_from_metadata(METADATA_FOLDED_LICENSE)
    assert got.expression == "MIT"
    assert got.source == "License"
    assert got.raw is not None
    assert got.raw.startswith("MIT License\n\nCopyright (c) 2020 Someone\n")


def test_metadata_without_license() -> None:
    assert license_from_metadata("Metadata-Version: 2.1\nName: x\nVersion: 1\n") == info(
        None, None, None
    )
    assert license_from_metadata(b"") == info(None, None, None)


def test_metadata_with_bad_encoding() -> None:
    data = (
        b"Metadata-Version: 2.1\nName: caf\xe9\nLicense: MIT \xff\xfe\n"
        b"Classifier: License :: OSI Approved :: ISC License (ISCL)\n\n\xff\xfe body"
    )
    got = license_from_metadata(data)
    assert got == info("ISC", "License :: OSI Approved :: ISC License (ISCL)", "classifier")
    latin1 = "Metadata-Version: 2.1\nName: café\nLicense: MIT\n".encode("latin-1")
    assert license_from_metadata(latin1).expression == "MIT"


# -- matching ------------------------------------------------------------------------------------


def test_deny_id_respects_or_and_and() -> None:
    m = LicenseMatcher(allow=[], deny=["GPL-3.0-only"])
    assert m.check("MIT OR GPL-3.0-only").status == "ok"
    assert m.check("MIT AND GPL-3.0-only") == LicenseVerdict(
        "denied", "GPL-3.0-only is on the deny-list ('GPL-3.0-only')"
    )
    assert m.check("GPL-3.0-or-later").status == "ok"
    assert m.check("MIT").status == "ok"


def test_allow_id_respects_or_and_and() -> None:
    m = LicenseMatcher(allow=["MIT"], deny=[])
    assert m.check("MIT OR GPL-3.0-only") == LicenseVerdict(
        "ok", "license MIT OR GPL-3.0-only is acceptable by choosing MIT"
    )
    assert m.check("MIT AND Apache-2.0") == LicenseVerdict(
        "not_allowed", "license Apache-2.0 is not on the allow-list"
    )
    assert m.check("LicenseRef-Proprietary") == LicenseVerdict(
        "not_allowed", "license LicenseRef-Proprietary is not on the allow-list"
    )
    assert m.check("ISC OR Zlib").status == "not_allowed"
    assert m.check("(MIT OR ISC) AND (Zlib OR MIT)").status == "ok"  # MIT AND MIT


def test_empty_lists_accept_everything_valid() -> None:
    m = LicenseMatcher(allow=(), deny=())
    assert m.check("LicenseRef-Proprietary") == LicenseVerdict(
        "ok", "license LicenseRef-Proprietary is acceptable"
    )


@pytest.mark.parametrize(
    ("deny", "expression", "status"),
    [
        ("GPL-*", "GPL-3.0-only", "denied"),
        ("GPL-*", "GPL-2.0-or-later", "denied"),
        ("GPL-*", "LGPL-3.0-only", "ok"),
        ("gpl-*", "gpl-3.0-only", "denied"),
        ("AGPL-*", "AGPL-3.0-or-later OR MIT", "ok"),
        ("AGPL-*", "AGPL-3.0-or-later AND MIT", "denied"),
        ("*-only", "LGPL-2.1-only", "denied"),
        ("*-only", "LGPL-2.1-or-later", "ok"),
        ("*GPL*", "AGPL-3.0-only OR LGPL-3.0-only OR GPL-2.0-only", "denied"),
        ("LicenseRef-Acme-*", "LicenseRef-Acme-EULA", "denied"),
        ("LicenseRef-Acme-*", "LicenseRef-Other", "ok"),
        ("*Proprietary*", "LicenseRef-Proprietary", "denied"),
        ("BSD-?-Clause", "BSD-2-Clause", "denied"),
    ],
)
def test_deny_globs(deny: str, expression: str, status: str) -> None:
    assert LicenseMatcher(allow=[], deny=[deny]).check(expression).status == status


def test_messages_name_the_id_and_the_pattern() -> None:
    m = LicenseMatcher(allow=[], deny=["GPL-*", "AGPL-*"])
    assert m.check("GPL-3.0-only") == LicenseVerdict(
        "denied", "GPL-3.0-only is on the deny-list ('GPL-*')"
    )
    verdict = m.check("GPL-3.0-only OR AGPL-3.0-only")
    assert verdict.status == "denied"
    assert verdict.message == (
        "every choice of GPL-3.0-only OR AGPL-3.0-only is denied: "
        "GPL-3.0-only is on the deny-list ('GPL-*'); AGPL-3.0-only is on the deny-list ('AGPL-*')"
    )
    allow = LicenseMatcher(allow=["MIT", "BSD-*"], deny=[])
    verdict = allow.check("GPL-3.0-only OR (Apache-2.0 AND BSD-2-Clause)")
    assert verdict == LicenseVerdict(
        "not_allowed",
        "no choice of GPL-3.0-only OR (Apache-2.0 AND BSD-2-Clause) is on the allow-list "
        "(not allowed: GPL-3.0-only, Apache-2.0)",
    )
    assert "\n" not in verdict.message


def test_allow_globs_and_case_insensitive_entries() -> None:
    m = LicenseMatcher(allow=["mit", "APACHE-2.0", "bsd-*", "licenseref-acme-*"], deny=[])
    for expression in [
        "MIT",
        "mit",
        "Apache-2.0 AND BSD-3-Clause",
        "bsd-2-clause",
        "LicenseRef-Acme-EULA",
        "licenseref-acme-eula AND MIT",
    ]:
        assert m.check(expression).status == "ok", expression
    assert m.check("ISC").status == "not_allowed"


def test_deny_is_checked_before_allow() -> None:
    m = LicenseMatcher(allow=["GPL-3.0-only", "MIT"], deny=["GPL-*"])
    assert m.check("GPL-3.0-only").status == "denied"
    assert m.check("GPL-3.0-only OR MIT").status == "ok"
    verdict = m.check("GPL-3.0-only OR ISC")  # ISC is not denied, but not allowed either
    assert verdict == LicenseVerdict(
        "not_allowed",
        "no choice of GPL-3.0-only OR ISC is on the allow-list (not allowed: ISC); "
        "GPL-3.0-only is on the deny-list ('GPL-*')",
    )


def test_with_exceptions() -> None:
    classpath = "GPL-2.0-only WITH Classpath-exception-2.0"
    # deny on the license id catches it with any exception
    assert LicenseMatcher(allow=[], deny=["GPL-2.0-only"]).check(classpath) == LicenseVerdict(
        "denied", f"{classpath} is on the deny-list ('GPL-2.0-only')"
    )
    assert LicenseMatcher(allow=[], deny=["GPL-*"]).check(classpath).status == "denied"
    # an exact WITH entry matches only that combination
    exact_deny = LicenseMatcher(allow=[], deny=[classpath.lower()])
    assert exact_deny.check(classpath).status == "denied"
    assert exact_deny.check("GPL-2.0-only").status == "ok"
    exact_allow = LicenseMatcher(allow=[classpath], deny=[])
    assert exact_allow.check("gpl-2.0-only with classpath-exception-2.0").status == "ok"
    assert exact_allow.check("GPL-2.0-only").status == "not_allowed"
    assert exact_allow.check("GPL-2.0-only WITH GCC-exception-2.0").status == "not_allowed"
    # allowing the license allows it with an exception (exceptions only add permissions)
    assert LicenseMatcher(allow=["GPL-2.0-only"], deny=[]).check(classpath).status == "ok"


def test_expression_entries() -> None:
    # an OR entry is its alternatives: the same as listing each
    either = LicenseMatcher(allow=[], deny=["GPL-3.0-only OR AGPL-3.0-only"])
    assert either.check("AGPL-3.0-only").status == "denied"
    assert either.check("GPL-3.0-only AND MIT").status == "denied"
    # an AND entry is one combination
    combo = LicenseMatcher(allow=["MIT AND BSD-2-Clause", "ISC"], deny=[])
    assert combo.check("BSD-2-Clause AND MIT").status == "ok"
    assert combo.check("MIT AND BSD-2-Clause AND ISC").status == "ok"
    assert combo.check("MIT").status == "not_allowed"
    assert combo.check("BSD-2-Clause AND ISC").status == "not_allowed"
    combo_deny = LicenseMatcher(allow=[], deny=["MIT AND GPL-2.0-only"])
    assert combo_deny.check("MIT").status == "ok"
    assert combo_deny.check("GPL-2.0-only AND MIT AND ISC") == LicenseVerdict(
        "denied", "MIT AND GPL-2.0-only is on the deny-list ('MIT AND GPL-2.0-only')"
    )


def test_entries_are_normalized_like_expressions() -> None:
    m = LicenseMatcher(allow=[], deny=["GPL-2.0+", "gpl-2.0"])
    assert m.check("GPL-2.0-or-later").status == "denied"
    assert m.check("GPL-2.0-only").status == "denied"
    assert m.allow == ()
    assert m.deny == ("GPL-2.0+", "gpl-2.0")


def test_no_license_and_unparseable_expressions_are_unknown() -> None:
    m = LicenseMatcher(allow=["MIT"], deny=["GPL-*"])
    assert m.check(None) == LicenseVerdict("unknown", "no license in the metadata")
    assert m.check("  ") == LicenseVerdict("unknown", "no license in the metadata")
    assert m.check("Apache 2.0") == LicenseVerdict(
        "unknown",
        "license 'Apache 2.0' is not a valid SPDX expression: unknown license id 'Apache 2.0'",
    )
    verdict = m.check("MIT OR")
    assert verdict.status == "unknown"
    assert verdict.message.startswith("license 'MIT OR' is not a valid SPDX expression: ")


def test_check_info_explains_unknown_licenses() -> None:
    m = LicenseMatcher(allow=[], deny=[])
    assert m.check_info(license_from_fields("mit", None, [])).status == "ok"
    assert m.check_info(license_from_fields(None, None, [])) == LicenseVerdict(
        "unknown", "no license in the metadata"
    )
    assert m.check_info(license_from_fields(None, "see LICENSE", [])) == LicenseVerdict(
        "unknown", "unknown license: License 'see LICENSE' is not a recognized SPDX license"
    )
    assert m.check_info(license_from_fields("Apache 2", None, [])) == LicenseVerdict(
        "unknown",
        "unknown license: License-Expression 'Apache 2' is not a recognized SPDX license",
    )
    vague = license_from_fields(None, None, ["License :: OSI Approved"])
    assert m.check_info(vague) == LicenseVerdict(
        "unknown",
        "unknown license: the license classifiers ('License :: OSI Approved') "
        "do not name an SPDX license",
    )


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        ("GLP-*", "GLP-*: the glob matches no SPDX license id"),
        ("Apache 2.0", "Apache 2.0: not an SPDX license id, expression or glob"),
        ("MIT OR", "MIT OR: not an SPDX license id, expression or glob"),
        ("GPL-* OR MIT", "GPL-* OR MIT: a glob is one license id pattern"),
        ("[GL]PL-*", "[GL]PL-*: a glob is one license id pattern"),
        ("Classpath-exception-2.0", "Classpath-exception-2.0: not an SPDX license id"),
        ("MIT\x00", "MIT\x00: not an SPDX license id, expression or glob"),
        ("", "'': an empty entry"),
    ],
)
def test_invalid_entries_raise_naming_the_entry(entry: str, why: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(why)):
        LicenseMatcher(allow=["MIT", entry], deny=[])
    with pytest.raises(ValueError, match="^" + re.escape(why)):
        LicenseMatcher(allow=[], deny=[entry])


def test_a_string_instead_of_a_list_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        LicenseMatcher(allow="MIT", deny=[])


# -- hostile input -------------------------------------------------------------------------------

CONTROL = "".join(chr(c) for c in range(0x20))


def test_huge_license_field() -> None:
    huge = "x" * 1_000_000
    got = license_from_fields(None, huge, [])
    assert got.expression is None
    assert got.raw is not None
    assert len(got.raw) == 2_000
    text = license_from_fields(None, "MIT License\n" + huge, [])
    assert text.expression == "MIT"
    assert text.raw is not None
    assert len(text.raw) == 2_000
    expression = license_from_fields("MIT OR " * 150_000 + "MIT", None, [])
    assert expression.expression is None
    assert expression.source == "License-Expression"
    metadata = (
        b"Metadata-Version: 2.1\nName: x\nLicense: "
        + b"A" * 1_000_000
        + b"\nClassifier: "
        + MIT_CLASSIFIER.encode()
        + b"\n\n"
    )
    assert license_from_metadata(metadata) == info("MIT", MIT_CLASSIFIER, "classifier")
    verdict = LicenseMatcher(allow=[], deny=[]).check(huge)
    assert verdict.status == "unknown"
    assert len(verdict.message) < 300


def test_control_characters() -> None:
    got = license_from_fields(CONTROL + "MIT", CONTROL, [CONTROL, "License :: " + CONTROL])
    assert got.expression is None
    assert got.source == "License-Expression"
    assert got.raw is not None
    assert "\x00" not in got.raw
    field = license_from_fields(None, "MIT\x00", [])
    assert field.expression is None
    assert field.raw == "MIT\ufffd"
    assert license_from_fields(None, None, ["License :: " + CONTROL]).expression is None
    verdict = LicenseMatcher(allow=[], deny=[]).check(CONTROL + "MIT")
    assert verdict.status == "unknown"
    assert "control characters" in verdict.message
    assert "\x00" not in verdict.message
    assert license_from_metadata(CONTROL.encode() * 10) == info(None, None, None)


def test_invalid_utf8_and_binary_garbage() -> None:
    assert license_from_metadata(bytes(range(256)) * 100).expression is None
    assert license_from_metadata(b"\xff\xfe\xfd" * 1000) == info(None, None, None)
    got = license_from_metadata(b"Metadata-Version: 2.1\nLicense-Expression: MIT\xff\n")
    assert got.expression is None
    assert got.raw == "MIT\ufffd"


def test_many_alternatives_are_unknown() -> None:
    ors_of_ands = " OR ".join(f"(LicenseRef-a{i} AND LicenseRef-b{i})" for i in range(200))
    ands_of_ors = " AND ".join(f"(LicenseRef-a{i} OR LicenseRef-b{i})" for i in range(200))
    m = LicenseMatcher(allow=["MIT"], deny=["GPL-*"])
    for expression in (ors_of_ands, ands_of_ors):
        assert license_from_fields(expression, None, []).expression is not None  # valid SPDX
        verdict = m.check(expression)
        assert verdict.status == "unknown"
        assert f"more than {MAX_ALTERNATIVES} alternatives" in verdict.message
    # duplicates do not count
    assert m.check(" OR ".join(["(MIT AND MIT)"] * 200)).status == "ok"
    exactly = " OR ".join(f"LicenseRef-x{i}" for i in range(MAX_ALTERNATIVES - 1)) + " OR MIT"
    assert m.check(exactly).status == "ok"


def test_nested_choices_are_expanded_once() -> None:
    nested = "MIT"
    for _ in range(30):  # 2 choices at every level; naive re-expansion would take 2**30 steps
        nested = f"(MIT OR ISC) AND ({nested})"
    verdict = LicenseMatcher(allow=["MIT"], deny=[]).check(nested)
    assert verdict.status == "ok"
    assert verdict.message.endswith("is acceptable by choosing MIT")


def test_deep_nesting_is_unknown() -> None:
    nested = "MIT"
    for _ in range(40):
        nested = f"(MIT AND ({nested} OR Apache-2.0))"
    verdict = LicenseMatcher(allow=[], deny=[]).check(nested)
    assert verdict.status == "unknown"
    assert "nested" in verdict.message
    assert LicenseMatcher(allow=[], deny=[]).check("(" * 5000 + "MIT" + ")" * 5000).status == (
        "unknown"
    )


# -- caching -------------------------------------------------------------------------------------


def test_parsing_is_cached() -> None:
    expression = "MIT OR (Apache-2.0 AND LicenseRef-Cache-Test)"
    before = licenses._parse_cached.cache_info().hits
    first = LicenseMatcher(allow=["MIT"], deny=[])
    second = LicenseMatcher(allow=["Apache-2.0", "LicenseRef-Cache-*"], deny=[])
    for _ in range(3):
        assert first.check(expression).status == "ok"
        assert second.check(expression).status == "ok"
    assert license_from_fields(expression, None, []).expression == expression
    # one parse, then hits: the second matcher and license_from_fields reuse it (each matcher
    # also keeps its own verdicts)
    assert licenses._parse_cached.cache_info().hits >= before + 2
    assert first.check(expression) is first.check(expression)
