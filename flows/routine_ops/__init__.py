"""IT Operations Management's routine jobs, and Technical Management's view of the estate.

One scheduled job (a deployment in prefect.yaml) per module; `common` holds what several of
them share. Each job publishes a table artifact; the jobs that change hosts report changed or
unchanged per host and support a dry run.
"""
