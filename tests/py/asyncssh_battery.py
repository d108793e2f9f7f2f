#!/usr/bin/env python3
"""asyncssh's SFTP client against a server (tests/tests/clients.rs): put and
get with hashes, copy-data (remote_copy), statvfs, posix_rename, hard link,
fsync, symlink (the argument order asyncssh uses with non-OpenSSH servers)
and readlink, and a listing with `.` and `..`. Prints one JSON object.

argv: port user password local_dir
"""
import asyncio
import hashlib
import json
import os
import sys

import asyncssh

port, user, password, local = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


async def main():
    out = {}
    async with asyncssh.connect(
        "127.0.0.1", port, username=user, password=password, known_hosts=None,
        client_keys=None, agent_path=None,
    ) as conn:
        async with conn.start_sftp_client() as sftp:
            src = os.path.join(local, "src.bin")
            with open(src, "wb") as f:
                f.write(os.urandom(3 * 1024 * 1024 + 17))
            await sftp.put(src, "/up.bin")
            back = os.path.join(local, "back.bin")
            await sftp.get("/up.bin", back)
            out["put_get"] = sha(back) == sha(src)
            out["src_sha256"] = sha(src)

            await sftp.remote_copy("/up.bin", "/copied.bin")
            out["remote_copy_size"] = (await sftp.stat("/copied.bin")).size

            vfs = await sftp.statvfs("/")
            out["statvfs_bsize"] = vfs.bsize

            await sftp.posix_rename("/copied.bin", "/renamed.bin")
            out["renamed_exists"] = await sftp.exists("/renamed.bin")
            out["copied_gone"] = not await sftp.exists("/copied.bin")

            await sftp.link("/renamed.bin", "/hard.bin")
            out["hard_size"] = (await sftp.stat("/hard.bin")).size

            async with sftp.open("/synced.txt", "wb") as f:
                await f.write(b"synced\n")
                await f.fsync()
            out["fsync_size"] = (await sftp.stat("/synced.txt")).size

            await sftp.symlink("up.bin", "/link.bin")
            out["readlink"] = await sftp.readlink("/link.bin")
            out["link_target_size"] = (await sftp.stat("/link.bin")).size

            names = [n.filename for n in await sftp.readdir("/")]
            out["dots"] = sorted(n for n in names if n in (".", ".."))
    print(json.dumps(out))


asyncio.run(main())
