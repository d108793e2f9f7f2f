#!/usr/bin/env python3
"""Client-controlled resources of one SSH connection, driven with paramiko's
channel API and raw SFTP packets (tests/tests/limits_sftp.rs). Prints one
JSON object.

argv: mode port user password [args...]

modes:
  pipeline WINDOW NWRITES   raw SFTP on a channel whose receive window is
                            WINDOW bytes (granted back only as this script
                            reads): NWRITES pipelined 32 KiB WRITEs with a
                            STAT and an OPEN of another file in the middle,
                            all sent before any reply is read.
  prefetch PATH             opens PATH, prefetches it, waits until the
                            window is full of replies it does not read, then
                            the process dies without closing anything.
  channels N                opens session channels (each with the sftp
                            subsystem) until one is refused or N are open;
                            then closes one and opens another.
  handles PATH N            opens PATH for reading until refused or N.
  status                    raw requests whose status codes clients notice
                            (/file, /dir and /dangling must exist); prints
                            each request's code and text.
"""
import hashlib
import json
import os
import socket
import struct
import sys
import time

import paramiko

mode, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
args = sys.argv[5:]

FXP_INIT, FXP_VERSION, FXP_OPEN, FXP_CLOSE, FXP_WRITE = 1, 2, 3, 4, 6
FXP_STAT, FXP_STATUS, FXP_HANDLE, FXP_ATTRS = 17, 101, 102, 105
O_WRITE, O_CREAT, O_TRUNC = 0x02, 0x08, 0x10


def transport():
    t = paramiko.Transport(("127.0.0.1", port))
    t.connect(username=user, password=password)
    return t


def string(b):
    return struct.pack(">I", len(b)) + b


def packet(kind, payload):
    return struct.pack(">IB", len(payload) + 1, kind) + payload


def recv_exact(chan, n):
    out = b""
    while len(out) < n:
        chunk = chan.recv(n - len(out))
        if not chunk:
            raise EOFError("channel closed")
        out += chunk
    return out


def recv_packet(chan):
    (length,) = struct.unpack(">I", recv_exact(chan, 4))
    body = recv_exact(chan, length)
    return body[0], body[1:]


def pipeline(window, nwrites):
    t = transport()
    chan = t.open_session(window_size=window, max_packet_size=min(window, 32768))
    # A hang is a failure with a reason, not a test that never ends.
    chan.settimeout(60)
    chan.invoke_subsystem("sftp")
    chan.sendall(packet(FXP_INIT, struct.pack(">I", 3)))
    kind, _ = recv_packet(chan)
    assert kind == FXP_VERSION, kind
    flags = O_WRITE | O_CREAT | O_TRUNC
    chan.sendall(packet(FXP_OPEN, struct.pack(">I", 1) + string(b"/piped") + struct.pack(">II", flags, 0)))
    kind, body = recv_packet(chan)
    assert kind == FXP_HANDLE, (kind, body)
    (hlen,) = struct.unpack(">I", body[4:8])
    handle = body[8 : 8 + hlen]

    digest = hashlib.sha256()
    block = os.urandom(32768)
    expected = {}
    req = 10
    for i in range(nwrites):
        data = bytes([i % 251]) + block[1:]
        digest.update(data)
        chan.sendall(packet(FXP_WRITE, struct.pack(">I", req) + string(handle) + struct.pack(">Q", i * len(data)) + string(data)))
        expected[req] = "write"
        req += 1
        if i == nwrites // 2:
            # The barriers of the issue: a STAT and another transfer's OPEN
            # among the in-flight WRITEs.
            chan.sendall(packet(FXP_STAT, struct.pack(">I", req) + string(b"/")))
            expected[req] = "stat"
            req += 1
            chan.sendall(packet(FXP_OPEN, struct.pack(">I", req) + string(b"/other") + struct.pack(">II", flags, 0)))
            expected[req] = "open"
            req += 1
    sent_all = time.time()
    replies = {}
    order = []
    other = None
    for _ in expected:
        kind, body = recv_packet(chan)
        (rid,) = struct.unpack(">I", body[:4])
        order.append(rid)
        if kind == FXP_STATUS:
            (code,) = struct.unpack(">I", body[4:8])
            replies[rid] = ("status", code)
        elif kind == FXP_HANDLE:
            (hl,) = struct.unpack(">I", body[4:8])
            other = body[8 : 8 + hl]
            replies[rid] = ("handle", 0)
        elif kind == FXP_ATTRS:
            replies[rid] = ("attrs", 0)
        else:
            replies[rid] = ("other", kind)
    for h, rid in ((handle, 1000000), (other, 1000001)):
        if h is not None:
            chan.sendall(packet(FXP_CLOSE, struct.pack(">I", rid) + string(h)))
            kind, body = recv_packet(chan)
            replies[rid] = ("status", struct.unpack(">I", body[4:8])[0])
    chan.close()
    t.close()
    bad = {str(k): v for k, v in replies.items() if v not in (("status", 0), ("handle", 0), ("attrs", 0))}
    return {
        "replies": len(replies),
        "expected": len(expected) + 2,
        "in_order": order == sorted(order),
        "kinds": {expected[r]: replies[r][0] for r in expected if expected[r] != "write"},
        "bad": bad,
        "sha256": digest.hexdigest(),
        "size": nwrites * 32768,
        "read_seconds": round(time.time() - sent_all, 3),
    }


def prefetch(path):
    t = transport()
    sftp = paramiko.SFTPClient.from_transport(t)
    f = sftp.open(path, "rb")
    size = f.stat().st_size
    f.prefetch(size)
    chan = sftp.sock
    # Wait (on the condition, not a clock) until the server has filled this
    # client's window with replies that nobody reads.
    deadline = time.time() + 30
    while len(chan.in_buffer) < 1024 * 1024:
        if time.time() > deadline:
            print(json.dumps({"error": "window never filled", "buffered": len(chan.in_buffer)}))
            sys.stdout.flush()
            os._exit(3)
        time.sleep(0.01)
    print(json.dumps({"buffered": len(chan.in_buffer)}))
    sys.stdout.flush()
    # Dies as a killed client does: no CLOSE, no channel close, no
    # disconnect; the kernel closes the socket.
    os._exit(0)


def channels(n):
    t = transport()
    opened, refused = [], None
    for _ in range(n):
        try:
            c = t.open_session()
        except paramiko.ChannelException as e:
            refused = {"code": e.code, "text": str(e.text)}
            break
        c.invoke_subsystem("sftp")
        opened.append(c)
    reopened = False
    held = len(opened)
    if refused and opened:
        opened.pop().close()
        # The place comes back once the server has seen the close.
        deadline = time.time() + 10
        while time.time() < deadline and not reopened:
            try:
                c = t.open_session()
                c.invoke_subsystem("sftp")
                opened.append(c)
                reopened = True
            except paramiko.ChannelException:
                time.sleep(0.05)
    alive = t.is_active()
    t.close()
    return {"opened": held, "refused": refused, "reopened": reopened, "alive": alive}


def handles(path, n):
    t = transport()
    sftp = paramiko.SFTPClient.from_transport(t)
    files, refused = [], None
    for _ in range(n):
        try:
            files.append(sftp.open(path, "rb"))
        except IOError as e:
            refused = str(e)
            break
    count = len(files)
    # Keeps them open until told (stdin closes), so the caller can test
    # other connections while these are held.
    print(json.dumps({"opened": count, "refused": refused}))
    sys.stdout.flush()
    sys.stdin.read()
    for f in files:
        f.close()
    t.close()
    return None


FXP_OPENDIR, FXP_MKDIR, FXP_READLINK = 11, 14, 19


def status():
    t = transport()
    chan = t.open_session()
    chan.settimeout(30)
    chan.invoke_subsystem("sftp")
    chan.sendall(packet(FXP_INIT, struct.pack(">I", 3)))
    kind, _ = recv_packet(chan)
    assert kind == FXP_VERSION, kind
    requests = {
        "stat_dangling": (FXP_STAT, string(b"/dangling")),
        "open_missing": (FXP_OPEN, string(b"/missing") + struct.pack(">II", 0x01, 0)),
        "opendir_file": (FXP_OPENDIR, string(b"/file")),
        "readlink_file": (FXP_READLINK, string(b"/file")),
        "mkdir_existing": (FXP_MKDIR, string(b"/dir") + struct.pack(">I", 0)),
    }
    out = {}
    for rid, (name, (kind, payload)) in enumerate(requests.items(), start=1):
        chan.sendall(packet(kind, struct.pack(">I", rid) + payload))
        rkind, body = recv_packet(chan)
        if rkind == FXP_STATUS:
            (code,) = struct.unpack(">I", body[4:8])
            (tlen,) = struct.unpack(">I", body[8:12])
            out[name] = {"code": code, "text": body[12 : 12 + tlen].decode()}
        else:
            out[name] = {"kind": rkind}
    t.close()
    return out


if mode == "status":
    out = status()
elif mode == "pipeline":
    out = pipeline(int(args[0]), int(args[1]))
elif mode == "prefetch":
    out = prefetch(args[0])
elif mode == "channels":
    out = channels(int(args[0]))
elif mode == "handles":
    out = handles(args[0], int(args[1]))
else:
    raise SystemExit(f"unknown mode {mode}")
if out is not None:
    print(json.dumps(out))
