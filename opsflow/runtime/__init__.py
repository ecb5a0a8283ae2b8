"""Running opsflow on one machine: the PostgreSQL cluster `opsflow up` owns (and, later, `up`
itself and its process supervisor)."""
