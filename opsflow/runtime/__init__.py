"""Running opsflow: its processes (the worker), the PostgreSQL it owns, what starts them."""
