"""The app releases a lab host keeps side by side, so releases can be put in place and rolled
back for real: `/var/lib/app/releases/<version>/` (the server and its `release.conf`) and the
`current` link that `svc start` runs.
"""

from __future__ import annotations

from pathlib import Path

RELEASES: dict[str, str] = {
    "1.0.0": "",
    "1.1.0": "",
    "1.2.0-badhealth": "badhealth",
    "1.3.0-nostart": "nostart",
}
"""Each version the lab builds and its defect: `badhealth` serves but answers /health 503,
`nostart` exits at start; an empty defect is a good release."""

INITIAL_RELEASE = "1.0.0"
"""The release `current` names when the lab starts."""


def write_releases(app_dir: Path, app_server: bytes) -> None:
    """Build every lab release under `app_dir/releases` and point `app_dir/current` at the first.

    The link is relative (`releases/1.0.0`), so it names the same release inside the host
    (`/var/lib/app`) and from the machine (the host's private directory bound there).
    """
    for version, defect in RELEASES.items():
        release = app_dir / "releases" / version
        release.mkdir(parents=True, exist_ok=True)
        (release / "app-server").write_bytes(app_server)
        (release / "app-server").chmod(0o755)
        (release / "release.conf").write_text(f"VERSION={version}\nDEFECT={defect}\n")
    current = app_dir / "current"
    current.unlink(missing_ok=True)
    current.symlink_to(Path("releases") / INITIAL_RELEASE)
