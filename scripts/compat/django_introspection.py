"""Django: database introspection as `inspectdb` and migrations use it.

Run by scripts/compat/capture with DJANGO_SETTINGS_MODULE=django_settings and
scripts/compat on PYTHONPATH."""

import django

django.setup()

from django.db import connection  # noqa: E402

intro = connection.introspection
print("tables:", intro.table_names())
with connection.cursor() as cursor:
    print("people:", [c.name for c in intro.get_table_description(cursor, "people")])
    print("constraints:", sorted(intro.get_constraints(cursor, "people")))
    print("relations:", intro.get_relations(cursor, "orders"))
    print("sequences:", intro.get_sequences(cursor, "people"))
connection.close()
