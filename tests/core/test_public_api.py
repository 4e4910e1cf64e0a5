"""Built-in plugins are written against the public API only, like third-party ones."""
import ast
from pathlib import Path

import pytest

import alignkit.api
import alignkit.plugins

PLUGINS = Path(alignkit.plugins.__file__).parent
#: modules a plugin may import from alignkit (the public surface, docs/writing-plugins.md)
PUBLIC = {"alignkit.api", "alignkit.losses", "alignkit.ops", "alignkit.testing", "alignkit.ranking"}
PUBLIC_TOP = set(alignkit.__all__) | {"ops", "losses", "api", "testing", "ranking"}


def _alignkit_imports(path: Path) -> list[tuple[int, str]]:
    """(line, what) for every import of alignkit in ``path``."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.startswith("alignkit"):
            if node.module == "alignkit":
                out += [(node.lineno, f"alignkit.{a.name}") for a in node.names if a.name not in PUBLIC_TOP]
            elif node.module not in PUBLIC:
                out.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("alignkit") and a.name not in PUBLIC]
    return out


@pytest.mark.parametrize("path", sorted(PLUGINS.rglob("*.py")), ids=lambda p: str(p.relative_to(PLUGINS)))
def test_builtin_plugins_import_only_the_public_api(path):
    assert _alignkit_imports(path) == []


def test_the_check_catches_private_imports(tmp_path):
    f = tmp_path / "p.py"
    f.write_text("from alignkit.modeling import unwrap\nfrom alignkit import hookimpl, registry\n"
                 "import alignkit.trainer\nfrom alignkit.plugins.dpo import DPO\nfrom alignkit.api import Algorithm\n")
    assert _alignkit_imports(f) == [(1, "alignkit.modeling"), (2, "alignkit.registry"), (3, "alignkit.trainer"),
                                    (4, "alignkit.plugins.dpo")]


def test_api_names_resolve():
    for name in alignkit.api.__all__:
        assert getattr(alignkit.api, name) is not None, name
