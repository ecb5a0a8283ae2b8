"""The lab's runbooks.yaml: one runbook declared as content, with a step over the app's admin
API, for the symptom `out-of-service` (`opsflow lab break HOST drain` causes it).

Written as text, comments and all, because it is the example people copy (README, "Write a
runbook"); the block `lab-app-admin` holds the admin API's token.
"""

from __future__ import annotations

from pathlib import Path

ADMIN_CREDENTIALS = "lab-app-admin"
"""The opsflow HTTP credentials block the lab's runbook authenticates to the admin API with."""

SYMPTOMS = {"out-of-service": "put-app-back-in-service"}
"""The app's symptoms restored by a declared runbook (services.yaml `runbooks:`)."""

RUNBOOKS_YAML = """\
# Runbooks declared as content: incident restoration runs them like the shipped ones.
runbooks:
  - name: put-app-back-in-service
    description: The app answers 503 because it is out of service; start it if it is not
      running, put it back in service through its admin API, check it runs.
    parameters:
      - name: reason
        type: string
        default: restored by opsflow
        pattern: '[A-Za-z0-9 .,:()-]+'
    diagnose:                            # read only: each step's output is in the worklog
      - name: status
        command: [/var/lib/app/bin/svc, status]
        expect_exit: [0, 3]              # 3: not running
        timeout_s: 30
      - name: admin-state
        http:
          method: GET
          url: http://{host.address}:{service.port}/admin/state
          credentials: lab-app-admin     # an "opsflow HTTP credentials" block
        timeout_s: 5
    remediate:                           # each step changes the host unless changes: false
      - name: start
        command: [/var/lib/app/bin/svc, start]   # exits 0 when it runs already
        timeout_s: 30
        rollback:                        # if verification fails: leave it stopped, not half up
          - name: stop
            command: [/var/lib/app/bin/svc, stop]
            timeout_s: 30
      - name: back-in-service
        http:
          method: PUT                    # idempotent, so retried after a transient failure
          url: http://{host.address}:{service.port}/admin/state
          body: {state: serving, reason: '{params.reason} ({reference})'}
          credentials: lab-app-admin
          expect_status: 200
        timeout_s: 10
    verify:                              # after the service's health check passes
      - name: running
        command: [/var/lib/app/bin/svc, status]
        timeout_s: 30
"""


def write_runbooks(estate_dir: Path) -> None:
    """Write the lab's runbooks.yaml into its estate."""
    (estate_dir / "runbooks.yaml").write_text(RUNBOOKS_YAML)
