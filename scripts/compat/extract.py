#!/usr/bin/env python3
"""Turn a slice of a PostgreSQL server log into a compatibility fixture.

The server must log with `log_statement = all`, to stderr (no logging
collector) and `log_line_prefix = '%m [%p] '`.  The statements a client
sent then show as

    2025-01-01 10:00:00.123 UTC [4242] LOG:  statement: select 1
    2025-01-01 10:00:00.125 UTC [4242] LOG:  execute <unnamed>: select $1
    2025-01-01 10:00:00.125 UTC [4242] DETAIL:  parameters: $1 = 'x'

and a message of several lines goes on in lines that start with a tab
(the server puts one after every newline of the message).

Simple-query statements (`statement:`) are kept as sent.  Extended-protocol
statements are logged at Execute (`execute <name>: ...`, Parse and Bind are
not logged by log_statement); their `$n` placeholders are replaced by the
logged parameter values, which the server already prints as quoted SQL
literals (`'...'` with quotes doubled, or NULL), so that every entry runs as
a simple query.  `execute fetch from ...` lines (more rows of a portal that
was already executed) are not new statements and are skipped.

Usage:
  extract.py --log FILE --from BYTE [--to BYTE] --out FIXTURE
             --tool NAME --command TEXT [--version TEXT ...] [--note TEXT ...]
"""

import argparse
import datetime
import re
import sys

PREFIX = re.compile(
    r"^(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)? \S+) "
    r"\[(?P<pid>\d+)\] (?P<sev>[A-Z][A-Z0-9]*):  (?P<text>.*)$"
)
# Lines that belong to the message before them (same write, same backend).
SECONDARY = {"DETAIL", "HINT", "CONTEXT", "STATEMENT", "QUERY", "LOCATION"}
EXECUTE = re.compile(r"^execute (?P<fetch>fetch from )?(?P<name>.+?): (?P<sql>.*)$", re.S)
PARAM = re.compile(r"\$(?P<n>\d+) = (?P<v>NULL|'(?:[^']|'')*')", re.S)
SEPARATOR = "-- next"


def read_slice(path, start, end):
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read() if end is None else f.read(end - start)
    return data.decode("utf-8", errors="replace")


def records(text):
    """Yield (pid, severity, message) for each log line and its continuations."""
    cur = None
    for line in text.split("\n"):
        m = PREFIX.match(line)
        if m:
            if cur:
                yield cur
            cur = [m["pid"], m["sev"], [m["text"]]]
        elif line.startswith("\t") and cur:
            cur[2].append(line[1:])
        else:
            # Not ours (e.g. a line some other program wrote): ends a record.
            if cur:
                yield cur
            cur = None
    if cur:
        yield cur


def messages(text):
    """Group each primary line with the DETAIL/STATEMENT/... lines after it."""
    last = {}
    out = []
    for pid, sev, lines in records(text):
        body = "\n".join(lines)
        if sev in SECONDARY and pid in last:
            last[pid]["extra"].append((sev, body))
            continue
        msg = {"pid": pid, "sev": sev, "text": body, "extra": []}
        last[pid] = msg
        out.append(msg)
    return out


def substitute(sql, params):
    """Replace $n outside literals, quoted identifiers, comments and dollar quotes."""
    out = []
    i, n = 0, len(sql)
    ident = re.compile(r"[A-Za-z0-9_$\x80-\U0010ffff]")
    used = set()
    while i < n:
        c = sql[i]
        prev = sql[i - 1] if i > 0 else ""
        if c == "'":
            escape = prev in "eE" and (i < 2 or not ident.match(sql[i - 2]))
            j = i + 1
            while j < n:
                if escape and sql[j] == "\\":
                    j += 2
                    continue
                if sql[j] == "'":
                    if j + 1 < n and sql[j + 1] == "'":
                        j += 2
                        continue
                    break
                j += 1
            out.append(sql[i : j + 1])
            i = j + 1
        elif c == '"':
            j = sql.find('"', i + 1)
            while j != -1 and j + 1 < n and sql[j + 1] == '"':
                j = sql.find('"', j + 2)
            j = n - 1 if j == -1 else j
            out.append(sql[i : j + 1])
            i = j + 1
        elif sql.startswith("--", i):
            j = sql.find("\n", i)
            j = n if j == -1 else j
            out.append(sql[i:j])
            i = j
        elif sql.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if sql.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif sql.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(sql[i:j])
            i = j
        elif c == "$" and not (prev and ident.match(prev)):
            m = re.match(r"\$(\d+)", sql[i:])
            if m:
                k = int(m[1])
                if k not in params:
                    raise ValueError(f"no logged value for ${k}")
                used.add(k)
                out.append(params[k])
                i += len(m[0])
                continue
            m = re.match(r"\$([A-Za-z_\x80-\U0010ffff][A-Za-z0-9_\x80-\U0010ffff]*)?\$", sql[i:])
            if m:
                tag = m[0]
                j = sql.find(tag, i + len(tag))
                j = n if j == -1 else j + len(tag)
                out.append(sql[i:j])
                i = j
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out), used


def ranges(nums):
    parts, start, prev = [], None, None
    for x in nums:
        if start is None:
            start = prev = x
        elif x == prev + 1:
            prev = x
        else:
            parts.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = prev = x
    if start is not None:
        parts.append(f"{start}" if start == prev else f"{start}-{prev}")
    return ", ".join(parts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--log", required=True)
    ap.add_argument("--from", dest="start", type=int, default=0)
    ap.add_argument("--to", dest="end", type=int)
    ap.add_argument("--out", required=True)
    ap.add_argument("--tool", required=True)
    ap.add_argument("--command", required=True)
    ap.add_argument("--version", action="append", default=[])
    ap.add_argument("--note", action="append", default=[])
    ap.add_argument("--date", default=datetime.date.today().isoformat())
    args = ap.parse_args()

    entries = []          # statement texts
    extended = []         # entry numbers sent with the extended protocol
    with_params = []      # ... of which had parameters
    errors = []           # (entry number, error text)
    fetches = 0
    pids = []
    last_entry = {}       # pid -> entry number of its latest statement
    for msg in messages(read_slice(args.log, args.start, args.end)):
        text = msg["text"]
        if msg["sev"] in ("ERROR", "FATAL") and msg["pid"] in last_entry:
            errors.append((last_entry[msg["pid"]], text.splitlines()[0]))
            continue
        if msg["sev"] != "LOG":
            continue
        if text.startswith("statement: "):
            sql = text[len("statement: "):]
            is_ext = False
        else:
            m = EXECUTE.match(text)
            if not m:
                continue
            if m["fetch"]:
                fetches += 1
                continue
            sql, is_ext = m["sql"], True
            params = {}
            for sev, body in msg["extra"]:
                if sev == "DETAIL" and body.startswith("parameters: "):
                    params = {int(p["n"]): p["v"] for p in PARAM.finditer(body)}
            if params:
                sql, used = substitute(sql, params)
                if used != set(params):
                    print(f"warning: unused parameters {set(params) - used} in: {sql[:80]}",
                          file=sys.stderr)
        sql = sql.strip("\n").rstrip()
        if any(line == SEPARATOR for line in sql.split("\n")):
            sys.exit(f"a statement contains a line '{SEPARATOR}': {sql[:80]}")
        entries.append(sql)
        k = len(entries)
        if is_ext:
            extended.append(k)
            if params:
                with_params.append(k)
        if msg["pid"] not in pids:
            pids.append(msg["pid"])
        last_entry[msg["pid"]] = k

    if not entries:
        sys.exit(f"no statements found in {args.log} from byte {args.start}")

    head = [
        f"-- Client-tool compatibility fixture: {args.tool}",
        f"-- Produced by: {args.command}",
    ]
    head += [f"-- Version: {v}" for v in args.version]
    head += [
        f"-- Captured: {args.date}, by scripts/compat/capture from the server log",
        "--   (log_statement = all) of a throwaway cluster loaded with scripts/compat/schema.sql.",
        f"-- {len(entries)} statements, in the order the tool sent them, separated by lines",
        f"--   '{SEPARATOR}'.",
        f"-- Backends (connections) used: {len(pids)}.",
    ]
    if extended:
        if len(extended) == len(entries):
            head += ["-- All entries were sent with the extended protocol (Parse/Bind/Execute)."]
        else:
            head += [
                "-- Sent with the extended protocol (Parse/Bind/Execute): entries "
                f"{ranges(extended)}; the others as simple queries.",
            ]
        if with_params:
            head += [
                "-- NOTE: the $n parameters of entries "
                f"{ranges(with_params)} were replaced by the values the server",
                "--   logged (DETAIL: parameters), written as quoted SQL literals ('...' or NULL), so",
                "--   that every entry runs as a simple query, e.g. with psql.",
            ]
    else:
        head += ["-- All entries were sent as simple queries."]
    if fetches:
        head += [f"-- {fetches} 'execute fetch from' (more rows of an open portal) left out."]
    for k, err in errors:
        head += [f"-- The server answered entry {k} with: {err}"]
    head += [f"-- {n}" for n in args.note]

    with open(args.out, "w") as f:
        f.write("\n".join(head) + "\n\n")
        f.write(f"\n{SEPARATOR}\n".join(entries) + "\n")
    print(f"{args.out}: {len(entries)} statements", file=sys.stderr)


if __name__ == "__main__":
    main()
