"""The test tree itself: pytest imports test modules by their basename (the directories have
no __init__.py), so two test files of one name in different directories stop the whole run at
collection. This has broken CI twice (test_identity.py, test_shared_link.py); this test names
the clash in the fast part of the suite instead."""

from collections import defaultdict
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_every_test_module_and_helper_has_its_own_name():
    where: dict[str, list[str]] = defaultdict(list)
    for p in TESTS.rglob("*.py"):
        if p.name != "conftest.py" and "__pycache__" not in p.parts:
            where[p.name].append(str(p.relative_to(TESTS)))
    clashes = {name: paths for name, paths in where.items() if len(paths) > 1}
    assert clashes == {}, f"test files sharing a name (pytest imports them by it): {clashes}"
