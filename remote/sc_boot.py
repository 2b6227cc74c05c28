# scbundle's tool bootstrap (Python 3 standard library only). It is never run from a file on
# the site: the local side sends this source inline on the command line of every tool
# invocation (`python3 -S -c <this> ...`, see scbundle.core.resources.boot_code), so nobody
# who can write on the site can plant or change it.
#
#   python3 -S -c BOOT TOOLS DIGESTS [--dir D | --mkdir D]... --check
#   python3 -S -c BOOT TOOLS DIGESTS [--dir D | --mkdir D]... TOOL [ARG]...
#
# TOOLS is the tools directory, DIGESTS "name=sha256,name=sha256,..." (the local copy's,
# embedded in the command). The tools directory, every directory on the way to a tool file
# and the file itself are opened without following symbolic links and must belong to this
# account and not be writable by group or others; each file's sha256 must be its digest. The
# bytes that were checked are the bytes that run (compiled from memory, never reopened), and
# a tool importing another (sc_cam imports sc_chip) gets it the same way; no module is
# imported from the tools directory or the working directory otherwise. --dir D: D, when it
# exists, must be a directory of this account's alone (not a symbolic link); --mkdir D
# creates it first (and its parents). The umask always keeps group and others from writing.
# --check verifies every file in DIGESTS and runs nothing.
#
# Exit codes: 90 the tools directory is absent; 91 a directory or file is a symbolic link,
# not this account's or writable by others (unsafe: nothing ran); 92 a tool is missing or
# its content differs; 2 a directory cannot be created; otherwise the tool's own.
# No exclamation mark anywhere in this file: a csh login shell would take it for history expansion.
import sys

if __name__ == "__main__":
    sys.path[:] = [p for p in sys.path if p]  # no "" (the working directory) on the import path

import hashlib
import os
import stat

ABSENT, UNSAFE, MISMATCH, OS_ERROR = 90, 91, 92, 2
_OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


class Refusal(Exception):
    def __init__(self, code, text):
        Exception.__init__(self, text)
        self.code = code


def _who(uid):
    try:
        import pwd

        return "%d (%s)" % (uid, pwd.getpwuid(uid).pw_name)
    except (ImportError, KeyError):
        return "%d" % uid


def check_private(st, path, what):
    # Refusal unless ``st`` (of ``path``) belongs to this account and is not group/other-writable.
    me = os.geteuid()
    if st.st_uid == me and not st.st_mode & 0o022:
        return
    raise Refusal(UNSAFE, "%s %s is owned by uid %s with mode %04o: it must belong to this account "
                  "(uid %s) and not be writable by group or others; nothing was run"
                  % (what, path, _who(st.st_uid), stat.S_IMODE(st.st_mode), _who(me)))


def open_dir(path, what, at=None, shown=None):
    # A descriptor of the directory ``path`` (relative to ``at``), checked private; None if absent.
    shown = shown or os.path.abspath(path)
    try:
        fd = os.open(path, _OPEN | os.O_DIRECTORY, dir_fd=at)
    except FileNotFoundError:
        return None
    except OSError as e:
        try:
            kind = "a symbolic link" if stat.S_ISLNK(os.lstat(path, dir_fd=at).st_mode) else "not a directory"
        except OSError:
            kind = "unusable (%s)" % e.strerror
        raise Refusal(UNSAFE, "%s %s is %s; nothing was run" % (what, shown, kind))
    try:
        check_private(os.fstat(fd), shown, what)
    except Refusal:
        os.close(fd)
        raise
    return fd


def read_tool(top, tools, name, digests):
    # The bytes of tool ``name`` (a path relative to the tools directory ``top``), verified.
    want = digests.get(name)
    shown = os.path.join(tools, name)
    if want is None:
        raise Refusal(MISMATCH, "%s is not one of this installation's tools" % shown)
    parts = name.split("/")
    fd = top
    try:
        for i, part in enumerate(parts[:-1]):
            sub = open_dir(part, "tools directory", at=fd, shown=os.path.join(tools, *parts[: i + 1]))
            if sub is None:
                raise Refusal(MISMATCH, "%s is missing" % shown)
            if not fd == top:
                os.close(fd)
            fd = sub
        try:
            f = os.open(parts[-1], _OPEN, dir_fd=fd)
        except FileNotFoundError:
            raise Refusal(MISMATCH, "%s is missing" % shown)
        except OSError as e:
            raise Refusal(UNSAFE, "tool %s cannot be opened without following links (%s); nothing was run"
                          % (shown, e.strerror))
    finally:
        if not fd == top:
            os.close(fd)
    with os.fdopen(f, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise Refusal(UNSAFE, "tool %s is not a regular file; nothing was run" % shown)
        check_private(st, shown, "tool")
        data = fh.read()
    got = hashlib.sha256(data).hexdigest()
    if not got == want:
        raise Refusal(MISMATCH, "tool %s does not match this installation (sha256 %s, expected %s); "
                      "nothing was run" % (shown, got[:16], want[:16]))
    return data


def parse_digests(text):
    out = {}
    for item in text.split(","):
        name, sep, digest = item.partition("=")
        if not sep or not name or ".." in name.split("/") or name.startswith("/"):
            raise Refusal(MISMATCH, "bad digest list item %r" % item)
        out[name] = digest
    return out


def private_dirs(args):
    # Handle the leading --dir / --mkdir options; the rest of ``args``.
    while len(args) >= 2 and args[0] in ("--dir", "--mkdir"):
        flag, path, args = args[0], args[1], args[2:]
        if flag == "--mkdir":
            try:
                os.makedirs(path, exist_ok=True)
            except FileExistsError:
                pass  # not a directory: open_dir says so
            except OSError as e:
                raise Refusal(OS_ERROR, "cannot create directory %s: %s" % (os.path.abspath(path), e.strerror))
        fd = open_dir(path, "directory")
        if fd is not None:
            os.close(fd)
    return args


def run(tools, digests, top, args):
    # Run tool args[0] from the verified bytes, as __main__, with args[1:] as its arguments.
    import importlib.machinery as machinery

    home = (os.path.abspath(tools), os.path.realpath(tools))
    name = args[0]
    code = compile(read_tool(top, tools, name, digests), os.path.join(tools, name), "exec")

    class Loader(object):
        def __init__(self, fn):
            self.fn = fn

        def create_module(self, spec):
            return None

        def exec_module(self, module):
            module.__file__ = os.path.join(tools, self.fn)
            exec(compile(read_tool(top, tools, self.fn, digests), module.__file__, "exec"), module.__dict__)

    class Finder(object):
        @staticmethod
        def find_spec(fullname, path=None, target=None):
            if path is not None:
                return None  # a submodule of a package found below: the usual finders
            fn = fullname + ".py"
            if fn in digests:
                return machinery.ModuleSpec(fullname, Loader(fn), origin=os.path.join(tools, fn))
            spec = machinery.PathFinder.find_spec(fullname, [p for p in sys.path if p and os.path.abspath(p) not in home])
            if spec is None:
                raise ModuleNotFoundError("No module named %r" % fullname, name=fullname)
            return spec

        @staticmethod
        def invalidate_caches():
            pass

    at = [i for i, f in enumerate(sys.meta_path) if f is machinery.PathFinder]
    sys.meta_path.insert(at[0] if at else len(sys.meta_path), Finder)
    main = type(sys)("__main__")
    main.__file__ = os.path.join(tools, name)
    sys.modules["__main__"] = main
    sys.argv = [main.__file__] + list(args[1:])
    exec(code, main.__dict__)


def main(argv):
    old = os.umask(0o022)
    os.umask(old | 0o022)
    try:
        if len(argv) < 3:
            raise Refusal(OS_ERROR, "usage: BOOT TOOLS DIGESTS [--dir D | --mkdir D]... (--check | TOOL [ARG]...)")
        tools, digests = argv[0], parse_digests(argv[1])
        args = private_dirs(argv[2:])
        if not args:
            raise Refusal(OS_ERROR, "no tool named")
        top = open_dir(tools, "tools directory")
        if top is None:
            raise Refusal(ABSENT, "tools directory %s is missing" % os.path.abspath(tools))
        if args == ["--check"]:
            for name in sorted(digests):
                read_tool(top, tools, name, digests)
            sys.stdout.write("scbundle tools: %d files in %s verified\n" % (len(digests), tools))
            return 0
    except Refusal as e:
        sys.stderr.write("scbundle tools: %s\n" % e)
        return e.code
    try:
        run(tools, digests, top, args)
    except Refusal as e:
        sys.stderr.write("scbundle tools: %s\n" % e)
        return e.code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
