# SPDX-License-Identifier: Apache-2.0
"""Differential test of kumod's TOML parser (kumod/proto/toml.c, through
build/kumo-toml --tagged) against Python's tomllib, the reference reader.

Valid corpus: tests/integration/toml/valid/*.toml (KumoMTA-style helper
files written from its documented formats, plus the TOML 1.0 spec's edge
cases). Both must accept with identical values and types. Invalid
documents: both must refuse; kumod names the line and column. Mutants:
deterministic byte-level mutations of the corpus; both must agree on
accept/refuse and, when accepting, on the values.
"""

import json
import math
import os
import random
import subprocess
import tomllib

import pytest

HERE = os.path.dirname(__file__)
TOOLS = os.environ.get("TOOLS_BIN") or os.path.join(HERE, "..", "..", "build")
TOOL = os.path.join(TOOLS, "kumo-toml")
VALID = sorted(os.path.join(HERE, "toml", "valid", f)
               for f in os.listdir(os.path.join(HERE, "toml", "valid")))


def kumo(data):
    p = subprocess.run([TOOL, "--tagged", "-"], input=data, capture_output=True, timeout=30)
    if p.returncode == 0:
        return json.loads(p.stdout), None
    return None, p.stderr.decode("utf-8", "replace").strip()


def untag(v):
    if isinstance(v, list):
        return [untag(x) for x in v]
    if "type" in v and "value" in v and isinstance(v["value"], str) and len(v) == 2:
        t, s = v["type"], v["value"]
        if t == "string":
            return s
        if t == "integer":
            return int(s)
        if t == "float":
            return float(s)
        if t == "bool":
            return s == "true"
        return tomllib.loads("v = " + s)["v"]  # date-times: the reference's own reading
    return {k: untag(x) for k, x in v.items()}


def same(a, b, path="$"):
    assert type(a) is type(b), f"{path}: {type(a).__name__} vs {type(b).__name__} ({a!r} vs {b!r})"
    if isinstance(a, dict):
        assert list(sorted(a)) == list(sorted(b)), f"{path}: keys {sorted(a)} vs {sorted(b)}"
        for k in a:
            same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), f"{path}: length {len(a)} vs {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), f"{path}: nan vs {b!r}"
    elif isinstance(a, float):
        assert a == b and math.copysign(1, a) == math.copysign(1, b), f"{path}: {a!r} vs {b!r}"
    else:
        assert a == b, f"{path}: {a!r} vs {b!r}"


def reference(data):
    try:
        return tomllib.loads(data.decode("utf-8")), None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        return None, str(e)


def out_of_int64(doc):
    """tomllib reads integers of any size; TOML 1.0 (and kumod) refuse what
    does not fit 64 bits. The only accepted divergence."""
    if isinstance(doc, dict):
        return any(out_of_int64(v) for v in doc.values())
    if isinstance(doc, list):
        return any(out_of_int64(v) for v in doc)
    return type(doc) is int and not -2**63 <= doc < 2**63


@pytest.mark.parametrize("path", VALID, ids=[os.path.basename(p) for p in VALID])
def test_valid_corpus_agrees(path):
    data = open(path, "rb").read()
    ref, rerr = reference(data)
    assert rerr is None, rerr
    got, err = kumo(data)
    assert err is None, err
    same(untag(got), ref)


INVALID = {
    "dup_key": (b"a = 1\na = 2\n", 2),
    "dup_table": (b"[a]\nb = 1\n[a]\nc = 2\n", 3),
    "table_over_dotted": (b"a.b = 1\n[a]\n", 2),
    "dotted_into_header_table": (b"[a.b]\nx = 1\n[a]\nb.y = 2\n", 4),
    "extend_inline": (b"a = {b = 1}\n[a]\n", 2),
    "dotted_into_inline": (b"a = {b = 1}\na.c = 2\n", 2),
    "aot_over_static_array": (b"a = [1]\n[[a]]\n", 2),
    "table_over_aot": (b"[[a]]\n[a]\n", 2),
    "no_value": (b"a = \n", 1),
    "no_equals": (b"a 1\n", 1),
    "two_on_a_line": (b"a = 1 b = 2\n", 1),
    "bad_escape": (b'a = "\\q"\n', 1),
    "surrogate_escape": (b'a = "\\uD800"\n', 1),
    "unterminated_string": (b'a = "abc\nb = 1\n', 1),
    "unterminated_ml": (b'a = """abc\n', 1),
    "newline_in_literal": (b"a = 'x\ny'\n", 1),
    "control_char": (b'a = "x\x01y"\n', 1),
    "control_in_comment": (b"# x\x7f\na = 1\n", 1),
    "leading_zero": (b"a = 012\n", 1),
    "double_underscore": (b"a = 1__2\n", 1),
    "trailing_underscore": (b"a = 12_\n", 1),
    "signed_hex": (b"a = +0x10\n", 1),
    "bad_float_dot": (b"a = 1.\n", 1),
    "bad_float_lead": (b"a = .5\n", 1),
    "exp_no_digits": (b"a = 1e\n", 1),
    "int_overflow": (b"a = 9223372036854775808\n", None),
    "bad_month": (b"a = 2024-13-01\n", 1),
    "bad_day": (b"a = 2023-02-29\n", 1),
    "bad_hour": (b"a = 24:00:00\n", 1),
    "no_seconds": (b"a = 07:32\n", 1),
    "bad_offset": (b"a = 1979-05-27T07:32:00+7:00\n", 1),
    "inline_newline": (b"a = { b = 1,\n c = 2 }\n", 1),
    "inline_trailing_comma": (b"a = { b = 1, }\n", 1),
    "array_no_comma": (b"a = [1 2]\n", 1),
    "array_unclosed": (b"a = [1, 2\n", 1),
    "header_unclosed": (b"[a\nb = 1\n", 1),
    "aot_unclosed": (b"[[a]\n", 1),
    "empty_header": (b"[]\n", 1),
    "bare_cr": (b"a = 1\rb = 2\n", 1),
    "invalid_utf8": (b"a = \"\xff\"\n", 1),
    "bad_bare_key": (b"a@b = 1\n", 1),
    "multiline_key": (b'"""a""" = 1\n', 1),
    "true_prefix": (b"a = truex\n", 1),
    "capital_true": (b"a = True\n", 1),
    "bad_inf": (b"a = infinity\n", 1),
    "key_redefined_as_table": (b"a = 1\n[a.b]\n", 2),
    "quad_quote_end": (b'a = """x""""""\n', 1),
    "deep_error_line": (b"[t]\na = 1\nb = 2\n\n\nc = [1, 2, @]\n", 6),
}


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_refused_by_both(name):
    data, line = INVALID[name]
    ref, rerr = reference(data)
    got, err = kumo(data)
    if name == "int_overflow":
        assert rerr is None and out_of_int64(ref)  # the documented divergence
    else:
        assert rerr is not None, f"tomllib accepted {data!r}: {ref!r}"
    assert got is None, f"kumod accepted {data!r}: {got!r}"
    # "-:LINE:COLUMN: message"
    where, _, msg = err.partition(": ")
    _, l, c = where.split(":")
    assert int(c) >= 1 and msg
    if line is not None:
        assert int(l) == line, err


MUTATIONS = [b"", b" ", b"\n", b"=", b".", b"[", b"]", b"{", b"}", b'"', b"'", b",", b"#",
             b"_", b"0", b"1", b"e", b"+", b"-", b":", b"T", b"Z", b"\\", b"x", b"\t", b"\r"]


def mutants(seed, count):
    rnd = random.Random(seed)
    corpus = [open(p, "rb").read() for p in VALID if os.path.getsize(p) > 0]
    for _ in range(count):
        doc = bytearray(rnd.choice(corpus))
        for _ in range(rnd.randint(1, 3)):
            i = rnd.randrange(len(doc))
            op = rnd.randrange(3)
            m = rnd.choice(MUTATIONS)
            if op == 0:
                doc[i:i + 1] = m
            elif op == 1:
                doc[i:i] = m
            else:
                del doc[i:i + rnd.randint(1, 4)]
        yield bytes(doc)


# The ASan re-run skips the 1,200 mutants (about a minute there): the
# parser's memory safety under ASan is the fuzz corpus replay's job.
@pytest.mark.nosan
@pytest.mark.parametrize("seed", range(8))
def test_mutants_agree(seed):
    disagreements = []
    for data in mutants(seed, 150):
        ref, rerr = reference(data)
        got, err = kumo(data)
        if rerr is None and out_of_int64(ref):
            continue
        if (rerr is None) != (err is None):
            disagreements.append((data, rerr, err))
            continue
        if got is not None:
            try:
                same(untag(got), ref)
            except AssertionError as e:
                disagreements.append((data, str(e), None))
    assert not disagreements, "\n\n".join(
        f"{d!r}\n  tomllib: {r}\n  kumod: {k}" for d, r, k in disagreements[:5])
