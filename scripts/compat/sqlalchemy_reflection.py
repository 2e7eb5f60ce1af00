"""SQLAlchemy 2 (psycopg dialect): schema reflection through the Inspector
and MetaData.reflect.

Run by scripts/compat/capture with COMPAT_SQLALCHEMY_URL set to the capture
cluster (postgresql+psycopg://...)."""

import os

from sqlalchemy import MetaData, create_engine, inspect

engine = create_engine(os.environ["COMPAT_SQLALCHEMY_URL"])
insp = inspect(engine)
print("tables:", insp.get_table_names())
print("columns:", [c["name"] for c in insp.get_columns("people")])
print("pk:", insp.get_pk_constraint("people"))
print("fks:", insp.get_foreign_keys("orders"))
print("indexes:", insp.get_indexes("people"))
md = MetaData()
md.reflect(engine)
print("reflected:", sorted(md.tables))
engine.dispose()
