# What `scbundle site check` asks the site (Python 3 standard library only). Sent inline, like
# sc_boot.py (scbundle.core.resources.inline_code), so it runs even where the tools are absent
# or planted by someone else; it only looks (lstat, listdir, reading the tools), never changes.
#
#   python3 -S -c CHECK < {"paths": [[role, path], ...], "above": path, "runs": dir,
#                          "tools": dir, "digests": "name=sha256,...", "max_runs": n}
#
# Prints one JSON object: {"uid", "user", "paths": [entry...], "above": [entry...] (each
# directory from "/" down to the real parent of "above"), "runs": [entry...] (every entry of
# the "runs" directory, and of each installation's directory in it: at most max_runs in all),
# "runs_total": n (run directories), "tools": [[name, problem or ""]...]}
# where an entry is {"role", "path", "exists", "symlink", "target", "dir", "uid", "user",
# "mode", "sticky"}. The local side decides what is wrong (scbundle.site.check).
# No exclamation mark anywhere in this file: a csh login shell would take it for history expansion.
import sys

if __name__ == "__main__":
    sys.path[:] = [p for p in sys.path if p]

import hashlib
import json
import os
import stat


def _user(uid):
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return ""


def entry(role, path):
    out = {"role": role, "path": path, "exists": False}
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return out
    except OSError as e:
        out["error"] = e.strerror
        return out
    out.update(exists=True, symlink=stat.S_ISLNK(st.st_mode), uid=st.st_uid, user=_user(st.st_uid),
               mode=stat.S_IMODE(st.st_mode), sticky=bool(st.st_mode & stat.S_ISVTX))
    if out["symlink"]:
        out["target"] = os.readlink(path)
        try:
            out["dir"] = stat.S_ISDIR(os.stat(path).st_mode)
        except OSError:
            out["dir"] = False
    else:
        out["dir"] = stat.S_ISDIR(st.st_mode)
    return out


def above(path):
    # every directory from "/" down to the real parent of path (or of its nearest existing ancestor)
    real = os.path.realpath(path)
    parent = os.path.dirname(real)
    chain = []
    while True:
        chain.append(parent)
        up = os.path.dirname(parent)
        if up == parent:
            break
        parent = up
    return [entry("above permanent_root", p) for p in reversed(chain)]


def tools(top, digests):
    out = []
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
    for item in digests.split(","):
        name, _, want = item.partition("=")
        path = os.path.join(top, name)
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            out.append([name, "missing"])
            continue
        except OSError as e:
            out.append([name, "cannot be opened without following links (%s)" % e.strerror])
            continue
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                out.append([name, "not a regular file"])
                continue
            if not st.st_uid == os.geteuid() or st.st_mode & 0o022:
                out.append([name, "owned by %s (uid %d), mode %04o" % (_user(st.st_uid) or "?", st.st_uid, stat.S_IMODE(st.st_mode))])
                continue
            got = hashlib.sha256(f.read()).hexdigest()
        out.append([name, "" if got == want else "differs from this installation's (sha256 %s)" % got[:16]])
    return out


def _names(d):
    try:
        return sorted(os.listdir(d))
    except OSError:
        return []


def main():
    req = json.loads(sys.stdin.read())
    me = os.geteuid()
    res = {"uid": me, "user": _user(me), "paths": [entry(r, p) for r, p in req["paths"]], "above": above(req["above"])}
    # runs/<stage>.<id>.a<n> (made before installation ids) and runs/<installation>/<stage>...:
    # an installation's directory (a name without a dot, a real directory) is looked into
    found = []  # (role, path)
    for n in _names(req["runs"]):
        path = os.path.join(req["runs"], n)
        if "." not in n and os.path.isdir(path) and not os.path.islink(path):
            found.append(("installation directory", path))
            found += [("run directory", os.path.join(path, m)) for m in _names(path)]
        else:
            found.append(("run directory", path))
    res["runs_total"] = sum(1 for role, _ in found if role == "run directory")
    res["runs"] = [entry(role, p) for role, p in found[: req["max_runs"]]]
    res["tools"] = tools(req["tools"], req["digests"]) if os.path.isdir(req["tools"]) else []
    sys.stdout.write(json.dumps(res) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
