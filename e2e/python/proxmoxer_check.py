#!/usr/bin/python3
"""REST API check with proxmoxer, a widely used third-party client of the Proxmox APIs.

Usage: proxmoxer_check.py HOST PORT USER PASSWORD STORE BACKUP_ID
Expects one finished snapshot of host/BACKUP_ID in STORE. Exits non-zero with a message on the
first mismatch. Also exercises a PUT with a form body (protected) and a DELETE (forget refused
while protected), as Proxmox VE does through the same kind of client.
"""
import sys

import urllib3
from proxmoxer import ProxmoxAPI

urllib3.disable_warnings()


def check(cond, what):
    if not cond:
        print(f"FAIL: {what}", file=sys.stderr)
        sys.exit(1)


host, port, user, password, store, backup_id = sys.argv[1:7]
pbs = ProxmoxAPI(host, port=int(port), user=user, password=password, service="PBS", verify_ssl=False)

version = pbs.version.get()
check(isinstance(version.get("version"), str) and isinstance(version.get("release"), str), f"version: {version}")

stores = pbs.admin.datastore.get()
check([s["store"] for s in stores] == [store], f"datastore list: {stores}")

ds = pbs.admin.datastore(store)
groups = ds.groups.get()
check(len(groups) == 1 and groups[0]["backup-id"] == backup_id, f"groups: {groups}")
check(isinstance(groups[0]["last-backup"], int) and groups[0]["backup-count"] == 1, f"group fields: {groups[0]}")

snaps = ds.snapshots.get(**{"backup-type": "host", "backup-id": backup_id})
check(len(snaps) == 1, f"snapshots: {snaps}")
snap = snaps[0]
time = snap["backup-time"]
check(isinstance(time, int) and isinstance(snap["size"], int), f"snapshot fields: {snap}")
params = {"backup-type": "host", "backup-id": backup_id, "backup-time": time}

files = ds.files.get(**params)
names = sorted(f["filename"] for f in files)
check("index.json.blob" in names and any(n.endswith(".fidx") for n in names), f"files: {names}")

status = ds.status.get()
check(status["total"] > 0 and status["used"] > 0 and status["avail"] >= 0, f"status: {status}")

ds.protected.put(**params, protected=1)
check(ds.protected.get(**params) in (True, 1), "protected flag not set")
try:
    ds.snapshots.delete(**params)
    check(False, "forget of a protected snapshot succeeded")
except Exception as err:  # proxmoxer raises ResourceException with the status
    check("protected" in str(err), f"unexpected forget error: {err}")
ds.protected.put(**params, protected=0)
check(ds.protected.get(**params) in (False, 0), "protected flag not cleared")

identity = pbs.nodes("localhost").identity.get()
check(len(identity.get("pbs-instance-id", "")) >= 16, f"identity: {identity}")
print("proxmoxer: all checks passed")
