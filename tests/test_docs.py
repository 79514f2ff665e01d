"""The house a newcomer walks: every setting and command documented, every link going somewhere,
each command's help ending with an example, and no import circles in app/."""

from __future__ import annotations

import ast
import re
from dataclasses import fields

import click
from click.testing import CliRunner

from app.cli import main
from app.settings import Settings
from tests.conftest import ROOT

DOCS = sorted((ROOT / "docs").glob("*.md"))


def every_command(group: click.Group = main, prefix: str = "") -> list[tuple[str, click.Command]]:
    found = []
    for name, command in sorted(group.commands.items()):
        path = f"{prefix} {name}".strip()
        found.append((path, command))
        if isinstance(command, click.Group):
            found.extend(every_command(command, path))
    return found


def test_every_setting_is_in_the_configuration_page() -> None:
    page = (ROOT / "docs" / "configuration.md").read_text()
    missing = [f.name.upper() for f in fields(Settings) if f"`{f.name.upper()}`" not in page]
    assert not missing, f"settings not in docs/configuration.md: {missing}"


def test_every_command_is_documented_and_its_help_ends_with_an_example() -> None:
    text = "\n".join(p.read_text() for p in [ROOT / "README.md", *DOCS])
    runner = CliRunner()
    for path, command in every_command():
        assert f"rainforest {path}" in text or (
            isinstance(command, click.Group)
            and all(f"rainforest {path} {sub}" in text for sub in command.commands)
        ), f"`rainforest {path}` is not in the README or docs/"
        shown = runner.invoke(main, [*path.split(), "--help"], terminal_width=100)
        assert shown.exit_code == 0, shown.output
        last = [line.strip() for line in shown.output.splitlines() if line.strip()][-1]
        if not isinstance(command, click.Group):
            assert "Example: " in shown.output.split("Options:")[0], (
                f"`rainforest {path} --help` has no example"
            )
        assert last, path


def test_the_readme_is_short_and_every_link_goes_somewhere() -> None:
    readme = ROOT / "README.md"
    assert len(readme.read_text().splitlines()) <= 200
    for page in [readme, *DOCS]:
        for target in re.findall(r"\]\(([^)#\s]+\.md)(#[^)]+)?\)", page.read_text()):
            path, anchor = target
            dest = (page.parent / path).resolve()
            assert dest.exists(), f"{page.name} links to {path}, which does not exist"
            if anchor:
                heads = {_anchor(h) for h in re.findall(r"^#+ (.+)$", dest.read_text(), re.M)}
                assert anchor[1:] in heads, f"{page.name} links to {path}{anchor}, which has no such heading"


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation gone, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_the_layout_section_names_every_module_of_the_tree() -> None:
    text = (ROOT / "docs" / "development.md").read_text()
    layout = text[text.index("## Layout") :]
    missing = []
    for path in sorted((ROOT / "app").rglob("*.py")):
        rel = path.relative_to(ROOT / "app")
        if path.name == "__init__.py" or "static" in rel.parts:
            continue
        if len(rel.parts) == 1:
            found = f"app/{path.name}" in layout or f" {path.name}" in layout
        else:
            start = layout.find(f"app/{rel.parts[0]}/")
            end = layout.find("\napp/", start + 1)
            found = start >= 0 and path.name in layout[start : end if end > 0 else None]
        if not found:
            missing.append(str(rel))
    assert not missing, f"docs/development.md's layout does not name: {missing}"


def test_the_app_has_no_import_circles() -> None:
    modules = {}
    for path in (ROOT / "app").rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        typing_only = {
            id(n) for node in ast.walk(tree)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test) for n in ast.walk(node)
        }  # fmt: skip
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("app"):
                targets = {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
            elif isinstance(node, ast.Import):
                targets = {a.name for a in node.names}
            else:
                continue
            graph[name] |= {t for t in targets if t in modules and t != name}
    circles = []
    for start in graph:  # depth-first from each module, looking for a way back to it
        stack, seen = [(start, (start,))], set()
        while stack:
            node, trail = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    circles.append(" → ".join((*trail, start)))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, (*trail, nxt)))
    assert not circles, circles[0]


def test_no_module_reaches_into_another_objects_private_parts() -> None:
    """A helper gets the narrow things it needs (a stop, a callback, a clock), never its caller's
    private attributes: `obj._name` only ever on `self` or `cls`."""
    import re

    reach = re.compile(r"\b(\w+)\.(_[a-z]\w*)")
    found = []
    for path in sorted((ROOT / "app").rglob("*.py")):
        for n, text in enumerate(path.read_text().splitlines(), 1):
            code = text.split("#", 1)[0]
            for owner, name in reach.findall(code):
                if owner not in ("self", "cls") and not name.startswith("__"):
                    found.append(f"{path.relative_to(ROOT)}:{n}: {owner}.{name}")
    assert not found, "\n".join(found)


def test_only_the_redis_domains_talk_to_redis() -> None:
    """Redis is used through one class per domain (app/db/, and tokens, sessions, leases, the cart
    registry and the compaction book), never directly by the rest: they may only hand a domain
    the connection (`store.redis`), or catch Redis's exceptions."""
    import re

    domains = {"app/store.py", "app/leases.py", "app/tokens.py", "app/web/sessions.py",
               "app/carts/registry.py", "app/research/claims.py"}  # fmt: skip
    talks = re.compile(
        r"\bredis\.(?!exceptions\b)\w+\(|import redis\.asyncio|from redis\.asyncio|\.redis\.\w+\("
    )
    found = []
    for path in sorted((ROOT / "app").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel in domains or rel.startswith("app/db/"):
            continue
        for n, text in enumerate(path.read_text().splitlines(), 1):
            code = text.split("#", 1)[0]
            if talks.search(code) and "redis.call(" not in code:
                found.append(f"{rel}:{n}: {text.strip()}")
    assert not found, "\n".join(found)
