"""A local estate of real sshd hosts on loopback, each with its own filesystem view and hostname.

Every lab host is one OpenSSH daemon listening on its own loopback address, started inside
its own mount and UTS namespace: an overlay over `/etc`, private `/home`, `/root` and
`/var/lib/app` (the app's releases side by side) and cron spool, a small tmpfs over
`/var/log/app` and its own hostname. Changes made over SSH on one host (a new user, a full
disk, a stopped service, another release) are therefore invisible on the others and on the
real machine, so opsflow's flows can be tested against real hosts and real failures. The
hosts share the machine's process table, so each gives new accounts uids no other host (nor
the machine) uses: killing a user's processes by uid stays on its host. `lab_up` also writes
the estate (hosts, services, pinned host keys) that `inventory.loader.load_estate` reads.

Creating mount and UTS namespaces needs root; `require_root` says so plainly.

One concept per module, each imported from directly (nothing is re-exported here): `plan`
(addresses, ports, account ids, keys), `checks`, `layout` (a host's files and mounts),
`releases` (the app's releases side by side), `estate`, `mounts` (the shared mount points),
`state` (the state file, `Lab`), `up`, `down`, `run` (`run_on_host`, `SVC`), `probes`
(`ssh_banner`, `app_health`, `app_version`, `lab_status`) and `breakage` (`break_host`).
"""
