"""What comes back of a finished job besides its own files: one pack invocation (``pack``, which
poll's pull of the job files uses too), and the permanent products (``pull_products``) of the
components that succeeded, staged under path_base/returned/products and moved to their
destinations (``Products.deliver``) only in the replay's transaction, only for components that
end up full. A failed component's leftovers stay on the site.
"""

from __future__ import annotations

import errno
import os
import shutil
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from scbundle.core.app import App
from scbundle.core.errors import DbinfoError, LocalIOError, UnsafeArchiveError
from scbundle.core.protocol import PROTOCOL as P
from scbundle.db.models import RemoteRun
from scbundle.site.layout import roots_args, tool_argv
from scbundle.site.link import Transport
from scbundle.site.pathmap import PathMap
from scbundle.site.transfer import extract_returned, inside
from scbundle.stages.registry import get_stage
from scbundle.steps.common import submit_context


def _products(path_base: Path) -> list[tuple[int, str, str]]:
    rows = []
    for line in (path_base / P.PRODUCTS_TSV).read_text().splitlines():
        idx, remote, local = line.split("\t")
        rows.append((int(idx), remote, local))
    return rows


def pack(
    app: App, run: RemoteRun, t: Transport, wanted: Sequence[tuple[str, Path]], roots: Sequence[Path], limits: int | Mapping[int, int]
) -> set[int]:
    """One pack invocation: the remote paths of ``wanted`` into their local paths, each at
    most its limit in bytes (one for all, or one per index) before any of it is written;
    returns the indices (into ``wanted``) that came back."""
    if not wanted:
        return set()
    site = app.site(run.site)
    ctx = submit_context(app, run)
    destinations = {i: dest for i, (_, dest) in enumerate(wanted)}
    listing = "".join(remote + "\n" for remote, _ in wanted).encode()
    back: set[int] = set()

    def consume(stream) -> None:
        back.update(extract_returned(stream, destinations, roots, max_bytes=limits).indices)

    argv = tool_argv(site.python, ctx.tools_dir, "sc_remote.py", "pack", *roots_args(site), dirs=[ctx.run_dir])
    t.stream_out(argv, consume, input=listing)
    return back



@dataclass
class Products:
    """A run's permanent products: the component index of each products.tsv row (``owners``),
    the rows that came back (``back``), staged under path_base/returned/products until
    ``deliver`` moves a full component's to their destinations."""

    owners: array
    back: set[int] = field(default_factory=set)
    staged: dict[int, Path] = field(default_factory=dict)
    destinations: dict[int, Path] = field(default_factory=dict)
    roots: list[Path] = field(default_factory=list)

    #: the directories delivered into, and how many products (where a person finds them)
    delivered_dirs: set[str] = field(default_factory=set)
    n_delivered: int = 0

    def deliver(self, components: Iterable[int]) -> None:
        """Move the staged products of ``components`` to their destinations."""
        want = set(components)
        for row, src in self.staged.items():
            if self.owners[row] in want:
                _deliver(src, self.destinations[row], self.roots)
                self.delivered_dirs.add(str(self.destinations[row].parent))
                self.n_delivered += 1

    def where(self) -> str | None:
        """The products delivered, in a line: how many, under which directory (None: none)."""
        if not self.delivered_dirs:
            return None
        return f"{self.n_delivered} product(s) under {os.path.commonpath(sorted(self.delivered_dirs))}"


def _deliver(src: Path, dest: Path, roots: Sequence[Path]) -> None:
    """``src`` to ``dest`` atomically (a rename, or across filesystems a copy beside ``dest``
    then a rename), refusing a destination that resolves outside ``roots``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not inside(dest.parent, roots) or dest.is_symlink():
        raise UnsafeArchiveError(f"destination {dest} resolves outside the site's local roots; refused")
    try:
        os.replace(src, dest)
        return
    except OSError as err:
        if err.errno != errno.EXDEV:
            raise
    tmp = dest.with_name(f".{dest.name}.part.{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            with os.fdopen(fd, "wb") as out, open(src, "rb") as f:
                shutil.copyfileobj(f, out, 1 << 20)
            os.replace(tmp, dest)
        finally:
            if tmp.exists():
                tmp.unlink()
    except OSError as err:  # a full or read-only destination: named, and the replay rolls back
        raise LocalIOError.writing(dest, err) from None
    src.unlink()


def pull_products(app: App, run: RemoteRun, t: Transport, good: set[int]) -> Products:
    """The permanent products of the components ``good`` (by index; the others' leftovers stay
    on the site), staged under path_base/returned/products."""
    site = app.site(run.site)
    path_base = Path(run.path_base or "")
    rows = _products(path_base)
    pm = PathMap.of(site.paths)
    stage_dir = path_base / "returned" / "products"
    stage_dir.mkdir(parents=True, exist_ok=True)
    out = Products(array("q", (idx for idx, _, _ in rows)), roots=[Path(r) for r in pm.local_roots()])
    wanted: list[tuple[str, Path]] = []
    picked: list[int] = []
    for row, (idx, remote, local) in enumerate(rows):
        if not pm.covers_local(local):
            raise DbinfoError(f"{path_base / 'products.tsv'}: product destination {local} is outside the site's local roots")
        if idx in good:
            out.destinations[row] = Path(local)
            wanted.append((remote, stage_dir / str(row)))
            picked.append(row)
    for i in pack(app, run, t, wanted, [stage_dir], get_stage(run.stage, app.config).max_product_bytes):
        row = picked[i]
        out.back.add(row)
        out.staged[row] = stage_dir / str(row)
    return out
