"""Stage plugins for the tests, installed the way pip leaves a distribution (its package and a
``NAME-VERSION.dist-info/`` with METADATA and entry_points.txt) in a directory the real
`scbundle` command gets on its PYTHONPATH, so importlib.metadata finds them as it finds a real
install and the virtual environment stays untouched.

``CATALOG`` is a third party's stage as such teams write them: a source-extractor-like program
that writes a catalog of the objects it finds in a raw chip image, a post that counts them, and
the exit code real programs use for everything (1). What it does follows the image's content,
so a test makes a component fail, crash half-way through its output, or report a hostile value
by rewriting that component's raw file:

- ``BAD``...: writes the catalog's header line, then exits 1 (a partial product, "0 objects");
- ``HUGE``...: a full catalog, and the post reports 10**30 objects;
- ``DEEP``...: a full catalog, and the post prints a 100,000-deep JSON list;
- anything else: one object per 1000 bytes.
"""

from __future__ import annotations

from pathlib import Path


def install(site: Path, name: str, version: str, entry_points: dict[str, str], files: dict[str, str],
            groups: dict[str, dict[str, str]] | None = None) -> None:
    """Lay a distribution out as pip does: its files, and NAME-VERSION.dist-info beside them
    (``entry_points`` in scbundle.stages; ``groups``: other entry-point groups, by name)."""
    for rel, text in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_text(text)
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    text = "[scbundle.stages]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items())
    for group, points in (groups or {}).items():
        text += f"\n[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in points.items())
    (info / "entry_points.txt").write_text(text)


CATALOG = r'''
"""A test-only third-party stage: a catalog of each raw chip image (see tests/pluginkit.py)."""
from __future__ import annotations

import posixpath

from sqlalchemy import Integer, String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from scbundle.db.models import Imfile, RemoteComponent
from scbundle.stages.base import ComponentSpec, DbinfoTable, MissingInput, Requirement, Stage
from scbundle.stages.common import Sizes, data_root, upsert


class Base(DeclarativeBase):
    pass


class CatalogResult(Base):
    __tablename__ = "catalog_result"
    imfile_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    remote_id: Mapped[int] = mapped_column(Integer)
    cat_uri: Mapped[str] = mapped_column(String(1024))
    nobj: Mapped[int | None]


EXTRACT = ("import sys; d = open(sys.argv[1], 'rb').read(); out = open(sys.argv[2], 'w'); "
           "out.write('# x y flux\\n'); out.flush(); "
           "sys.exit(1) if d.startswith(b'BAD') else None; "
           "out.write('# huge\\n' if d.startswith(b'HUGE') else '# deep\\n' if d.startswith(b'DEEP') else ''); "
           "[out.write('%d %d 1.0\\n' % (i, i)) for i in range(max(1, len(d) // 1000))]")
COUNT = ("import json, sys; lines = open(sys.argv[1]).read().splitlines(); "
         "n = 10**30 if '# huge' in lines else [] if '# deep' in lines else sum(1 for x in lines if not x.startswith('#')); "
         "v = ('[' * 100000 + ']' * 100000) if n == [] else json.dumps(n); "
         "print('{\"table\": \"catalog_result\", \"key\": {\"imfile_id\": %s}, \"values\": {\"nobj\": %s}}' % (sys.argv[2], v))")


class CatalogStage(Stage):
    name = "catalog"
    dbinfo_tables = {"catalog_result": DbinfoTable(CatalogResult, "imfile_id", {"nobj": int})}
    fault_map = {1: 5}  # the extractor exits 1 for a bad image: a data fault, not worth a retry

    def __init__(self, threads=1, cost_seconds=0.05):
        self.threads, self.cost_seconds = threads, cost_seconds

    def pending_work(self, session, limit):
        taken = select(RemoteComponent.stage_id).where(RemoteComponent.stage == self.name)
        q = select(Imfile.imfile_id).where(Imfile.imfile_id.not_in(taken)).order_by(Imfile.imfile_id)
        return list(session.scalars(q.limit(limit) if limit is not None else q))

    def cat_path(self, label, raw, pm):
        return posixpath.join(data_root(pm, raw), "catalog", label, posixpath.basename(raw) + ".cat")

    def build(self, session, stage_ids, ctx):
        uris = dict(session.execute(select(Imfile.imfile_id, Imfile.uri).where(Imfile.imfile_id.in_(stage_ids))).tuples().all())
        sizes, pm, out = Sizes(), ctx.pathmap, []
        for sid in stage_ids:
            raw = uris.get(sid)
            if raw is None or sizes(raw) is None:
                out.append(MissingInput(sid, raw or f"imfile {sid}"))
                continue
            cat = self.cat_path(ctx.label, raw, pm)
            raw_r, cat_r = pm.to_remote(raw), pm.to_remote(cat)
            out.append(ComponentSpec(
                stage_id=sid, inputs=(Requirement(raw, raw_r, sizes(raw) or 0),), out_dirs=(posixpath.dirname(cat_r),),
                command=(ctx.python, "-S", "-c", EXTRACT, raw_r, cat_r),
                post=(ctx.python, "-S", "-c", COUNT, cat_r, str(sid)),
                products=((cat_r, cat),), cost=self.cost_seconds,
            ))
        return out

    def replay(self, session, run, records, ctx):
        CatalogResult.__table__.create(session.connection(), checkfirst=True)
        uris = dict(session.execute(select(Imfile.imfile_id, Imfile.uri).where(Imfile.imfile_id.in_([r.stage_id for r in records]))).tuples().all())
        upsert(session, CatalogResult, "imfile_id", [
            {"imfile_id": r.stage_id, "remote_id": run.remote_id, "cat_uri": self.cat_path(run.label, uris[r.stage_id], ctx.pathmap), **r.values}
            for r in records
        ])
'''


def install_catalog(site: Path) -> None:
    install(site, "scbundle-catalog-test", "0.1", {"catalog": "scbundle_catalog:CatalogStage"}, {"scbundle_catalog/__init__.py": CATALOG})
