#!/usr/bin/env python3
"""Summarise what the compatibility fixtures ask of a gateway.

Parses every statement with pglast (libpg_query, PostgreSQL's own parser, as
the gateway uses it) and lists, per fixture and over all of them: statement
kinds, the functions called, SQL value functions (current_schema, ...),
casts to reg* types (a relation or type named inside a string literal),
locking (LOCK, FOR UPDATE/SHARE), SET/SHOW/set_config, PREPARE/EXECUTE,
`x.oid`-style and other system-column references, field selection from a
composite value (`(expr).field`), the relations read, and literals that look
like OIDs of the capture cluster's own objects (>= 16384).

Usage: analyze.py FIXTURE ... > analysis.md   (needs `pip install pglast`)
"""

import collections
import os
import re
import sys

from pglast import ast, parse_sql

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from replay import read_fixture  # noqa: E402

SYSTEM_COLUMNS = {"oid", "tableoid", "xmin", "xmax", "cmin", "cmax", "ctid"}
FIRST_USER_OID = 16384
LOCK_MODES = {1: "ACCESS SHARE", 2: "ROW SHARE", 3: "ROW EXCLUSIVE", 4: "SHARE UPDATE EXCLUSIVE",
              5: "SHARE", 6: "SHARE ROW EXCLUSIVE", 7: "EXCLUSIVE", 8: "ACCESS EXCLUSIVE"}


def walk(node):
    if isinstance(node, ast.Node):
        yield node
        for name in node:
            yield from walk(getattr(node, name))
    elif isinstance(node, (list, tuple)):
        for x in node:
            yield from walk(x)


def names(strings):
    return ".".join(s.sval for s in strings if isinstance(s, ast.String))


def enum_name(v):
    return getattr(v, "name", str(v))


class Facts:
    def __init__(self):
        self.kinds = collections.Counter()
        self.funcs = collections.Counter()
        self.sqlvalue = collections.Counter()
        self.regcasts = collections.Counter()
        self.locks = []
        self.locking_clauses = []
        self.settings = []
        self.prepared = []
        self.syscols = collections.Counter()
        self.indirection = collections.Counter()
        self.relations = collections.Counter()
        self.oid_literals = []
        self.unparsed = []
        self.multi = []

    def add(self, k, sql):
        try:
            stmts = parse_sql(sql)
        except Exception as e:  # noqa: BLE001 - report and go on
            self.unparsed.append((k, str(e)))
            return
        if len(stmts) > 1:
            self.multi.append(k)
        for raw in stmts:
            st = raw.stmt
            kind = type(st).__name__
            if isinstance(st, ast.TransactionStmt):
                kind += f" ({enum_name(st.kind).removeprefix('TRANS_STMT_')})"
            self.kinds[kind] += 1
            if isinstance(st, ast.LockStmt):
                rels = ", ".join((r.schemaname + "." if r.schemaname else "") + r.relname
                                 for r in st.relations)
                mode = LOCK_MODES.get(st.mode, str(st.mode))
                self.locks.append((k, f"LOCK TABLE {rels} IN {mode} MODE"))
            if isinstance(st, (ast.VariableSetStmt, ast.VariableShowStmt)):
                self.settings.append((k, sql.strip().split("\n")[0][:90]))
            if isinstance(st, (ast.PrepareStmt, ast.ExecuteStmt, ast.DeallocateStmt)):
                self.prepared.append((k, f"{kind} {st.name}"))
            for n in walk(st):
                if isinstance(n, ast.FuncCall):
                    fname = names(n.funcname)
                    self.funcs[fname] += 1
                    if fname.split(".")[-1] == "set_config":
                        self.settings.append((k, sql.strip().split("\n")[0][:90]))
                elif isinstance(n, ast.SQLValueFunction):
                    self.sqlvalue[enum_name(n.op).removeprefix("SVFOP_").lower()] += 1
                elif isinstance(n, ast.TypeCast):
                    tname = names(n.typeName.names).lower()
                    if tname.split(".")[-1].startswith("reg"):
                        arg = n.arg
                        lit = None
                        if isinstance(arg, ast.A_Const) and isinstance(arg.val, ast.String):
                            lit = arg.val.sval
                        self.regcasts[f"{lit!r}::{tname}" if lit is not None else f"<expr>::{tname}"] += 1
                elif isinstance(n, ast.SelectStmt) and n.lockingClause:
                    for lc in n.lockingClause:
                        self.locking_clauses.append((k, enum_name(lc.strength)))
                elif isinstance(n, ast.ColumnRef):
                    f = [x.sval for x in n.fields if isinstance(x, ast.String)]
                    if f and f[-1].lower() in SYSTEM_COLUMNS:
                        self.syscols["x." + f[-1] if len(f) > 1 else f[-1]] += 1
                elif isinstance(n, ast.A_Indirection):
                    for ind in n.indirection:
                        if isinstance(ind, ast.String):
                            self.indirection[f"({type(n.arg).__name__}).{ind.sval}"] += 1
                elif isinstance(n, ast.RangeVar):
                    rel = (n.schemaname + "." if n.schemaname else "") + n.relname
                    self.relations[rel] += 1
                elif isinstance(n, ast.A_Const) and isinstance(n.val, (ast.String, ast.Integer)):
                    v = n.val.sval if isinstance(n.val, ast.String) else n.val.ival
                    for m in re.findall(r"\b\d{5,10}\b", str(v)):
                        if FIRST_USER_OID <= int(m) < 2**32:
                            self.oid_literals.append((k, m))

    def merge(self, other):
        for name in ("kinds", "funcs", "sqlvalue", "regcasts", "syscols", "indirection", "relations"):
            getattr(self, name).update(getattr(other, name))


def catalog_funcs(facts):
    return {f.removeprefix("pg_catalog.") for f in facts.funcs}


def counted(c):
    return ", ".join(f"`{k}`" + (f" ×{v}" if v > 1 else "") for k, v in sorted(c.items())) or "none"


def listed(pairs):
    return "; ".join(f"#{k} `{v}`" for k, v in pairs) or "none"


def main():
    files = sys.argv[1:]
    if not files:
        sys.exit(__doc__)
    total = Facts()
    out = ["# What the client-tool fixtures ask of a gateway", "",
           "Generated by scripts/compat/analyze.py from the fixtures beside this file",
           "(statements parsed with pglast, i.e. libpg_query). `#n` is a statement's",
           "number in its fixture.", ""]
    per = []
    for path in files:
        f = Facts()
        stmts = read_fixture(path)
        for k, sql in enumerate(stmts, 1):
            f.add(k, sql)
        total.merge(f)
        per.append((os.path.basename(path), len(stmts), f))
    out += ["## All fixtures", "",
            f"- statements: {sum(n for _, n, _ in per)} in {len(per)} fixtures",
            f"- statement kinds: {counted(total.kinds)}",
            f"- functions called, as written (distinct: {len(total.funcs)}): {counted(total.funcs)}",
            f"- the same without the `pg_catalog.` prefix (distinct: {len(catalog_funcs(total))}): "
            + ", ".join(f"`{x}`" for x in sorted(catalog_funcs(total))),
            f"- SQL value functions: {counted(total.sqlvalue)}",
            f"- casts to reg* types: {counted(total.regcasts)}",
            f"- system-column references: {counted(total.syscols)}",
            f"- field selection from a composite: {counted(total.indirection)}",
            f"- relations read: {counted(total.relations)}", ""]
    for name, n, f in per:
        oids = sorted({m for _, m in f.oid_literals}, key=int)
        out += [f"## {name} ({n} statements)", "",
                f"- kinds: {counted(f.kinds)}",
                f"- functions: {counted(f.funcs)}",
                f"- SQL value functions: {counted(f.sqlvalue)}",
                f"- reg* casts: {counted(f.regcasts)}",
                f"- LOCK: {listed(f.locks)}",
                f"- locking clauses (FOR UPDATE/SHARE...): {listed(f.locking_clauses)}",
                f"- SET / SHOW / set_config: {listed(f.settings)}",
                f"- PREPARE / EXECUTE: {listed(f.prepared)}",
                f"- system-column references: {counted(f.syscols)}",
                f"- field selection from a composite: {counted(f.indirection)}",
                f"- relations: {counted(f.relations)}",
                f"- literals that look like the capture cluster's OIDs: {', '.join(oids) or 'none'}"
                + (f" (in #{', #'.join(str(k) for k in sorted({k for k, _ in f.oid_literals}))})" if oids else ""),
                f"- entries with several statements: {', '.join(map(str, f.multi)) or 'none'}",
                f"- not parsed: {listed(f.unparsed)}", ""]
    print("\n".join(out))


if __name__ == "__main__":
    main()
