#!/usr/bin/env python3
"""Replay compatibility fixtures with psql and report the statements that fail.

Each fixture (crates/portcullis/tests/fixtures/compat/*.sql) is replayed in
one psql session (`psql -X -v ON_ERROR_STOP=1`), statement by statement, in
order, so that what a statement needs from the ones before it (BEGIN before
LOCK TABLE, SET search_path, ...) holds as it did for the tool.  When a
statement fails, psql stops; the failure is reported and the replay goes on
from the next statement in a new session.

Usage: replay.py [--psql PSQL] [--host H] [--port P] [--user U] [--dbname D]
                 FIXTURE ...
Closes with 'replay: N passed, N failed' (counted in statements) and exits 1
if any failed.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile

SEPARATOR = "-- next"


def read_fixture(path):
    """The statements of a fixture, without its header comment."""
    with open(path) as f:
        text = f.read()
    chunks, cur = [], []
    for line in text.split("\n"):
        if line == SEPARATOR:
            chunks.append("\n".join(cur))
            cur = []
        else:
            cur.append(line)
    chunks.append("\n".join(cur))
    if chunks:
        lines = chunks[0].split("\n")
        while lines and (lines[0].startswith("--") or not lines[0].strip()):
            lines.pop(0)
        chunks[0] = "\n".join(lines)
    return [c.strip("\n") for c in chunks if c.strip()]


def session(args, stmts, first):
    """Run stmts[first:] in one psql session. Returns (failed index or None, error, warnings)."""
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write("\\o /dev/null\n")
        for k in range(first, len(stmts)):
            sql = stmts[k]
            f.write(f"\\echo @@entry {k}\n{sql}\n")
            if not sql.rstrip().endswith(";"):
                f.write(";\n")
        f.write("\\echo @@done\n")
        script = f.name
    try:
        cmd = [args.psql, "-X", "-v", "ON_ERROR_STOP=1", "-h", args.host, "-p", str(args.port),
               "-U", args.user, "-d", args.dbname, "-f", script]
        p = subprocess.run(cmd, capture_output=True, text=True)
    finally:
        os.unlink(script)
    warnings = [l for l in p.stderr.splitlines() if re.search(r"\b(WARNING|NOTICE):", l)]
    if p.returncode == 0 and "@@done" in p.stdout:
        return None, None, warnings
    marks = re.findall(r"^@@entry (\d+)$", p.stdout, re.M)
    if p.returncode != 3 or not marks:
        sys.exit(f"psql failed (exit {p.returncode}):\n{p.stderr}")
    errs = [re.sub(r"^psql:[^:]*:\d+: ", "", l) for l in p.stderr.splitlines()
            if not re.search(r"\b(WARNING|NOTICE):", l)]
    return int(marks[-1]), "\n".join(errs).strip(), warnings


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--psql", default="psql")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", default=os.environ.get("COMPAT_PORT", "55433"))
    ap.add_argument("--user", default="postgres")
    ap.add_argument("--dbname", default="app")
    ap.add_argument("fixtures", nargs="+")
    args = ap.parse_args()

    passed = failed = 0
    for path in args.fixtures:
        stmts = read_fixture(path)
        first, fails, warns = 0, [], []
        while first < len(stmts):
            k, err, w = session(args, stmts, first)
            warns += w
            if k is None:
                break
            fails.append((k, err))
            first = k + 1
        passed += len(stmts) - len(fails)
        failed += len(fails)
        name = os.path.basename(path)
        if fails:
            print(f"{name}: {len(stmts)} statements, {len(fails)} FAILED")
            for k, err in fails:
                first_line = stmts[k].split("\n")[0][:100]
                print(f"  statement {k + 1} ({first_line}): {err}")
        else:
            print(f"{name}: {len(stmts)} statements, all ran")
        for w in warns:
            print(f"  {re.sub(r'^psql:[^:]*:[0-9]+: ', '', w)}")
    print(f"replay: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
