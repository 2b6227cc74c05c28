"""The `commands` stage's tables: an Alembic branch of its own (scbundle.db.migrate), as a
plugin's would be."""
