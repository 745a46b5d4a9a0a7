#!/usr/bin/env python3
"""craft.py: a hostile tenant's edit of a backup object (tests only).

  craft.py IN.gz OUT.gz TABLE FIELD=VALUE...

Reads a backup object (gzip'ed format v1), sets FIELD to VALUE (JSON text) in
the first row of TABLE, and writes the object back; every other byte of the
document is kept as it was. Prints the new object's SHA-256 and size, as the
manifest and backup_metadata record them, so a test can forge a consistent
record: what an attacker with S3 write access and `backupctl reindex`, or
database access, can do.
"""
import gzip
import hashlib
import json
import sys


def main():
    src, dst, table = sys.argv[1:4]
    edits = [a.split("=", 1) for a in sys.argv[4:]]
    lines = gzip.decompress(open(src, "rb").read()).decode().split("\n")
    head = '"%s":[' % table
    at = lines.index(head) + 1
    row = lines[at]
    comma = row.endswith(",")
    obj = json.loads(row[:-1] if comma else row)
    for field, value in edits:
        obj[field] = json.loads(value)
    lines[at] = json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + ("," if comma else "")
    data = gzip.compress("\n".join(lines).encode(), 1)
    open(dst, "wb").write(data)
    print(hashlib.sha256(data).hexdigest(), len(data))


main()
