"""Accounts, SSH keys and sudo rules on hosts: what access grants put in place and take away.

Each changing task reads the host's state and changes only what differs, in the same call, and
returns a `Change` (unchanged and why, or made and what); with `dry_run` it reports what it
would do (planned) and changes nothing. Everything opsflow puts on a host is marked so review
can tell it from the rest: accounts are members of the group `opsflow-access`, key lines end
with the comment `opsflow-grant-<id>`, sudo rules live in `/etc/sudoers.d/opsflow-grant-<id>`.
Nothing else on a host is ever removed.

The shell scripts are files in `scripts/`, constant; values reach them as positional arguments
(quoted by `tasks.ssh`) or on standard input (key lines, sudoers text). A user's own files are
read and written with that user's identity (`setpriv`), so a symlink planted in a home
directory cannot make root overwrite or disclose another file.

One module per concept: `facts` (what a host holds), `accounts`, `keys` and `sudo` (the
changing steps), `steps` (what every changing step shares), `review` (which grant explains
what a host holds).
"""
