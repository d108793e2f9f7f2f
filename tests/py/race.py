#!/usr/bin/env python3
"""The rename race of the security review, with two SFTP connections of one
user. One connection keeps swapping the real directory /r/d with /r/e, a
link planted to a directory outside the home; the other keeps using paths
through /r/d: open and read, list, stat, create, mkdir, rename, setstat, and
the sha256sum SSH command. Anything that shows the outside directory's
content is an escape. Prints one JSON object with the counts and escapes.

argv: port user password seconds outside_marker outside_size
"""
import hashlib
import json
import sys
import threading
import time

import paramiko

port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
seconds, marker, outside_size = float(sys.argv[4]), sys.argv[5], int(sys.argv[6])
outside_sha = sys.argv[7]


def connect():
    t = paramiko.Transport(("127.0.0.1", port))
    t.connect(username=user, password=password)
    return t, paramiko.SFTPClient.from_transport(t)


stop = time.time() + seconds
swaps = 0
counts = {"read": 0, "list": 0, "stat": 0, "create": 0, "mkdir": 0, "rename": 0, "setstat": 0, "hash": 0}
inside = {"read": 0, "list": 0}
escapes = []
errors = {}


def swapper():
    global swaps
    t, s = connect()
    while time.time() < stop:
        for a, b in (("/r/d", "/r/t"), ("/r/e", "/r/d"), ("/r/d", "/r/e"), ("/r/t", "/r/d")):
            try:
                s.posix_rename(a, b)
            except IOError:
                pass
        swaps += 1
    t.close()


def note(kind, e):
    key = f"{kind}: {e}"
    errors[key] = errors.get(key, 0) + 1


def prober():
    t, s = connect()
    n = 0
    while time.time() < stop:
        n += 1
        try:
            with s.open("/r/d/hostname", "r") as f:
                data = f.read()
            counts["read"] += 1
            if marker.encode() in data:
                escapes.append("read the outside file")
            elif data == b"inside\n":
                inside["read"] += 1
        except IOError as e:
            note("read", e)
        try:
            names = s.listdir("/r/d")
            counts["list"] += 1
            if "outside-only" in names:
                escapes.append("listed the outside directory")
            elif "hostname" in names:
                inside["list"] += 1
        except IOError as e:
            note("list", e)
        try:
            st = s.stat("/r/d/hostname")
            counts["stat"] += 1
            if st.st_size == outside_size:
                escapes.append("stat of the outside file")
        except IOError as e:
            note("stat", e)
        try:
            with s.open(f"/r/d/new-{n}", "w") as f:
                f.write(b"x")
            counts["create"] += 1
        except IOError as e:
            note("create", e)
        try:
            s.mkdir(f"/r/d/mk-{n}")
            counts["mkdir"] += 1
        except IOError as e:
            note("mkdir", e)
        try:
            s.posix_rename(f"/r/d/new-{n}", f"/r/d/ren-{n}")
            counts["rename"] += 1
        except IOError as e:
            note("rename", e)
        try:
            s.chmod("/r/d/hostname", 0o600)
            s.utime("/r/d/hostname", (1, 1))
            counts["setstat"] += 1
        except IOError as e:
            note("setstat", e)
        if n % 10 == 0:
            try:
                ch = t.open_session()
                ch.exec_command("sha256sum /r/d/hostname")
                out = ch.makefile("rb").read().decode()
                ch.recv_exit_status()
                ch.close()
                counts["hash"] += 1
                if outside_sha in out:
                    escapes.append("hashed the outside file")
            except Exception as e:  # noqa: BLE001 - report any client failure
                note("hash", e)
    t.close()


threads = [threading.Thread(target=swapper), threading.Thread(target=prober)]
for th in threads:
    th.start()
for th in threads:
    th.join()
top_errors = sorted(errors.items(), key=lambda kv: -kv[1])[:8]
print(json.dumps({"swaps": swaps, "counts": counts, "inside": inside, "escapes": escapes, "errors": top_errors}))
