"""The desk's HTTP API under `/api/v1`: one router per resource, mounted by `desk.app`."""
