#!/usr/bin/env python3
"""Writes the seed corpora in fuzz/corpus/<target>/ (small valid inputs).

Run from anywhere: python3 fuzz/seeds/make_seeds.py. The files are committed;
this script documents how they were made and remakes them.
"""
import json
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "corpus")


def put(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def s(b):
    b = b if isinstance(b, bytes) else b.encode()
    return struct.pack(">I", len(b)) + b


def pkt(kind, body=b""):
    return struct.pack(">IB", len(body) + 1, kind) + body


u32 = lambda n: struct.pack(">I", n)
u64 = lambda n: struct.pack(">Q", n)
NO_ATTRS = u32(0)
INIT = pkt(1, u32(3))
# pflags: READ 1, WRITE 2, APPEND 4, CREAT 8, TRUNC 0x10, EXCL 0x20
OPEN_W = lambda i, p: pkt(3, u32(i) + s(p) + u32(0x1A) + u32(4) + u32(0o644))
OPEN_R = lambda i, p: pkt(3, u32(i) + s(p) + u32(1) + NO_ATTRS)
CLOSE = lambda i, h: pkt(4, u32(i) + s(h))
READ = lambda i, h, off, n: pkt(5, u32(i) + s(h) + u64(off) + u32(n))
WRITE = lambda i, h, off, data: pkt(6, u32(i) + s(h) + u64(off) + s(data))
EXT = lambda i, name, data=b"": pkt(200, u32(i) + s(name) + data)

sftp = {
    "init": INIT,
    "upload": INIT + OPEN_W(1, "a.txt") + WRITE(2, "1", 0, b"hello") + CLOSE(3, "1"),
    "upload_download": INIT + OPEN_W(1, "/d/f") + pkt(14, u32(1) + s("/d") + NO_ATTRS)
    + OPEN_W(2, "/d/f") + WRITE(3, "1", 0, b"data") + CLOSE(4, "1")
    + OPEN_R(5, "/d/f") + READ(6, "2", 0, 4096) + READ(7, "2", 4, 10) + CLOSE(8, "2"),
    "listing": INIT + pkt(16, u32(1) + s(".")) + pkt(11, u32(2) + s("/")) + pkt(12, u32(3) + s("1"))
    + pkt(12, u32(4) + s("1")) + CLOSE(5, "1"),
    "tree_ops": INIT + pkt(14, u32(1) + s("x") + NO_ATTRS) + pkt(18, u32(2) + s("x") + s("y"))
    + pkt(20, u32(3) + s("../../etc/passwd") + s("y/link")) + pkt(19, u32(4) + s("y/link"))
    + pkt(7, u32(5) + s("y/link")) + pkt(17, u32(6) + s("y/link")) + pkt(13, u32(7) + s("y/link"))
    + pkt(15, u32(8) + s("y")),
    "setstat": INIT + OPEN_W(1, "f") + CLOSE(2, "1")
    + pkt(9, u32(3) + s("f") + u32(0x1 | 0x4 | 0x8) + u64(3) + u32(0o600) + u32(1) + u32(2))
    + pkt(8, u32(4) + s("1")),
    "extensions": INIT + EXT(1, "limits@openssh.com") + EXT(2, "statvfs@openssh.com", s("/"))
    + EXT(3, "home-directory", s("fuzz")) + EXT(4, "expand-path@openssh.com", s("~/a/../b"))
    + OPEN_W(5, "src") + WRITE(6, "1", 0, b"0123456789") + EXT(7, "fsync@openssh.com", s("1"))
    + EXT(8, "hardlink@openssh.com", s("src") + s("hl"))
    + EXT(9, "posix-rename@openssh.com", s("hl") + s("hl2"))
    + OPEN_W(10, "dst") + EXT(11, "copy-data", s("1") + u64(0) + u64(5) + s("2") + u64(0))
    + CLOSE(12, "1") + CLOSE(13, "2"),
    "folder_and_filters": INIT + OPEN_W(1, "/mnt/shared/in.bin") + WRITE(2, "1", 1 << 20, b"x")
    + CLOSE(3, "1") + OPEN_W(4, "evil.exe") + pkt(14, u32(5) + s("/ro") + NO_ATTRS)
    + OPEN_W(6, "/ro/f") + pkt(18, u32(7) + s("/mnt/shared/in.bin") + s("/moved.bin"))
    + pkt(18, u32(8) + s("/mnt/shared") + s("/x")),
}
for name, data in sftp.items():
    # sftp_session: the first byte picks the upload mode (0 direct, 1 atomic, 2 resume).
    put("sftp_session", name, b"\x00" + data)
    put("sftp_packet", name, data)
put("sftp_session", "upload_atomic", b"\x01" + sftp["upload"])
put("sftp_packet", "version_reply", pkt(2, u32(3) + s("posix-rename@openssh.com") + s("1")))
put("sftp_packet", "status_reply", pkt(101, u32(7) + u32(2) + s("No such file") + s("en")))
put("sftp_packet", "name_reply", pkt(104, u32(1) + u32(1) + s("a") + s("-rw-r--r-- 1 a a 0 Jan 1 a")
                                     + u32(0xF) + u64(5) + u32(0) + u32(0) + u32(0o100644) + u32(1) + u32(2)))

scp = {
    "file": "scp -t /dst\nC0644 5 name\nhello\x00",
    "times_file": "scp -p -t .\nT1700000000 0 1700000001 0\nC0600 0 empty\n\x00",
    "recursive": "scp -r -t /\nD0755 0 dir\nC0644 3 a b\nabc\x00D0700 0 sub\nE\nE\n",
    "bad_name": "scp -t /x\nC0644 1 ../escape\nx\x00",
    "source": "scp -f /a /b\n\x00",
    "client_error": "scp -rt /\n\x01scp: oops\nD0755 0 d\nE\n",
}
for name, data in scp.items():
    put("scp_protocol", name, data)

V2 = b"\r\n\r\n\x00\r\nQUIT\n"
proxy = {
    "v1_tcp4": b"\x01\x00PROXY TCP4 192.0.2.1 198.51.100.2 51000 22\r\nSSH-2.0-OpenSSH_9.6\r\n",
    "v1_tcp6": b"\x01\x03PROXY TCP6 2001:db8::1 2001:db8::2 51000 22\r\nSSH-2.0-x\r\n",
    "v1_unknown": b"\x02\x00PROXY UNKNOWN\r\n",
    "v2_tcp4": b"\x02\x00" + V2 + b"\x21\x11" + struct.pack(">H", 12)
    + bytes([192, 0, 2, 1, 198, 51, 100, 2]) + struct.pack(">HH", 51000, 22) + b"SSH-2.0-x\r\n",
    "v2_tcp6_tlv": b"\x01\x03" + V2 + b"\x21\x21" + struct.pack(">H", 36 + 8)
    + bytes(range(16)) + bytes(range(16, 32)) + struct.pack(">HH", 1, 2)
    + b"\x02" + struct.pack(">H", 5) + b"a.com",
    "v2_local": b"\x02\x01" + V2 + b"\x20\x00" + struct.pack(">H", 0),
    "plain_ssh": b"\x01\x00SSH-2.0-OpenSSH_9.6\r\n",
}
for name, data in proxy.items():
    put("proxy_header", name, data)

cmds = {
    "rsync_upload": "rsync --server -vlogDtpre.iLsfxC . dst/",
    "rsync_download": "rsync --server --sender -vlogDtpre.iLsfxCIvu --timeout=30 . 'my dir/'",
    "rsync_bad": "rsync --server -e ssh --rsync-path=/bin/sh . x",
    "git_upload_pack": "git-upload-pack '/repo.git'",
    "git_receive_pack": 'git-receive-pack "repo with space.git"',
    "scp_sink": "scp -r -p -t -- /dst",
    "sha256sum": "sha256sum 'a b'\\ c",
    "copy": "sftpgo-copy /a \"/b c\"",
    "unbalanced": "md5sum 'oops",
}
for name, data in cmds.items():
    put("ssh_command", name, data)

vpaths = {
    "dotdot": "/\x00../../etc/passwd",
    "relative": "/home/user\x00a/./b//c/../d/",
    "absolute": "/x/y\x00/abs/../..",
    "dirty_cwd": "a/../../b//\x00../c",
    "dots": "/\x00...//./..",
}
for name, data in vpaths.items():
    put("vpath_clean", name, data)

backup = {
    "version": 17,
    "users": [{
        "username": "alice", "status": 1, "home_dir": "/srv/ferry/alice",
        "password": "$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy",
        "permissions": {"/": ["*"], "/ro": ["list", "download"]},
        "virtual_folders": [{"name": "shared", "virtual_path": "/shared", "quota_size": -1, "quota_files": -1}],
        "filters": {"denied_login_methods": ["password"], "file_patterns": [{"path": "/", "denied_patterns": ["*.exe"]}]},
        "used_quota_size": 10,
    }],
    "folders": [{"name": "shared", "mapped_path": "/srv/ferry/shared"}],
    "groups": [{"name": "staff", "user_settings": {"permissions": {"/": ["list"]}}}],
    "admins": [{"username": "root", "status": 1, "password": "secret-pass", "permissions": ["*"]}],
    "api_keys": [],
}
put("loaddata_json", "backup_v17", json.dumps(backup, indent=1))
v1 = {"users": [{"username": "bob", "home_dir": "/srv/bob", "permissions": {"/": ["*"]},
                 "virtual_folders": [{"mapped_path": "/data/x", "virtual_path": "/x"}]}],
      "folders": [{"mapped_path": "/data/x"}]}
put("loaddata_json", "backup_1x", json.dumps(v1))
put("loaddata_json", "unsupported", json.dumps({"version": 17, "shares": [{"id": "x"}]}))
put("loaddata_json", "bad_user", json.dumps({"users": [{"username": "../x", "home_dir": "rel"}]}))

# copy-data reading "to EOF" from a file another handle appends to: it used to
# run until the disk filled (dataplane/tests/sftp_copy_data.rs).
OPEN_WT = lambda i, p: pkt(3, u32(i) + s(p) + u32(0x1A) + NO_ATTRS)
put("sftp_session", "copy_data_same_file", b"\x00" + INIT + OPEN_WT(1, "f")
    + WRITE(2, "1", 0, b"0123456789") + OPEN_R(3, "f")
    + EXT(4, "copy-data", s("2") + u64(0) + u64(0) + s("1") + u64(10)))
