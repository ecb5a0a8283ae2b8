"""The records store: ITIL records in SQLite or PostgreSQL, through SQLAlchemy Core only.

`records.Records` is the facade a process opens once: the database (`db`), then one module per
kind of record (incidents, events, problems, known errors, requests, access grants,
maintenance windows, facts), the audit every change writes, the leases that say who carries
what, and retention. Importing `opsflow.itsm.store.records` declares every table.
"""
