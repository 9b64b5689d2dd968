#!/usr/bin/env python3
# A minimal QMP client for the QEMU tests: qmp.py SOCKET COMMAND [JSON-ARGUMENTS]
# prints the command's "return" as JSON (exit 1 with the error on an "error" answer).
import json
import socket
import sys


def main():
    path, command = sys.argv[1], sys.argv[2]
    args = json.loads(sys.argv[3]) if len(sys.argv) > 3 else None
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(path)
    f = s.makefile("rw")
    json.loads(f.readline())                    # the greeting
    for cmd, a in (("qmp_capabilities", None), (command, args)):
        msg = {"execute": cmd}
        if a is not None:
            msg["arguments"] = a
        f.write(json.dumps(msg) + "\n")
        f.flush()
        while True:
            reply = json.loads(f.readline())
            if "event" in reply:
                continue
            break
        if "error" in reply:
            print(json.dumps(reply["error"]))
            sys.exit(1)
    print(json.dumps(reply.get("return")))


if __name__ == "__main__":
    main()
