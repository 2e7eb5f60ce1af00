"""psycopg 3: look up type information the way an application registering
adapters does (TypeInfo / CompositeInfo / EnumInfo .fetch).

Run by scripts/compat/capture with COMPAT_DSN set to the capture cluster."""

import os

import psycopg
from psycopg.types import TypeInfo
from psycopg.types.composite import CompositeInfo
from psycopg.types.enum import EnumInfo

with psycopg.connect(os.environ["COMPAT_DSN"]) as conn:
    text = TypeInfo.fetch(conn, "text")
    row = CompositeInfo.fetch(conn, "people")
    enum = EnumInfo.fetch(conn, "sales.invoice_status")
    print("text:", text.oid, text.array_oid)
    print("people:", row.oid, row.field_names, row.field_types)
    print("sales.invoice_status:", enum.oid, enum.labels)
