"""Drives SSH authentication step by step with paramiko and prints what the
server answered to each step, one JSON object per line, so tests can assert
exact partial-success behaviour that OpenSSH's client hides.

usage: ssh_auth.py PORT USER STEP...
  STEP: key:PATH | password:SECRET | ki:A1|A2|... (keyboard-interactive:
  prompts get the answers in order across rounds, the last one repeats)
  SRC=IP in the environment binds the client side to that address.
Each step prints {"step": STEP-KIND, "result": "ok" | "partial" | "denied" |
"failed" | "closed", "next": [methods]}.
"""
import json
import os
import socket
import sys

import paramiko


def main():
    port, user, steps = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(30)
    if os.environ.get("SRC"):
        sock.bind((os.environ["SRC"], 0))
    try:
        sock.connect(("127.0.0.1", port))
        t = paramiko.Transport(sock)
        t.start_client(timeout=30)
    except Exception as e:  # refused before the handshake (defender)
        print(json.dumps({"step": "connect", "result": "closed", "error": str(e)}))
        return
    print(json.dumps({"step": "connect", "result": "ok"}))
    for step in steps:
        kind, _, arg = step.partition(":")
        out = {"step": kind}
        try:
            if kind == "key":
                key = paramiko.PKey.from_path(arg)
                cert = arg + "-cert.pub"
                if os.path.exists(cert):
                    key.load_certificate(cert)
                nxt = t.auth_publickey(user, key)
            elif kind == "password":
                nxt = t.auth_password(user, arg, fallback=False)
            elif kind == "ki":
                queue = arg.split("|")

                def handler(title, instructions, prompts, queue=queue):
                    out = []
                    for _ in prompts:
                        out.append(queue.pop(0) if len(queue) > 1 else queue[0])
                    return out

                nxt = t.auth_interactive(user, handler)
            else:
                raise SystemExit("unknown step " + kind)
            out["result"] = "partial" if nxt else "ok"
            out["next"] = list(nxt)
        except paramiko.BadAuthenticationType as e:
            out["result"] = "denied"
            out["next"] = list(e.allowed_types)
        except paramiko.AuthenticationException as e:
            out["result"] = "failed"
            out["next"] = list(getattr(e, "allowed_types", []) or [])
        except (paramiko.SSHException, EOFError, OSError) as e:
            out["result"] = "closed"
            out["error"] = str(e)
        print(json.dumps(out), flush=True)
        if out["result"] == "closed":
            break
    out = {"step": "end", "authenticated": t.is_authenticated()}
    print(json.dumps(out))
    t.close()


main()
