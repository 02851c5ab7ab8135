"""Guards against drift: the layout the docs describe is the layout there is, and no module grows into a room.

Each package's docstring names each of its modules, and so does the README's layout block,
so a module added without a word fails here rather than in a reviewer's head. No module
outside ``testing/`` is over ``MAX_LINES`` lines, and no function or class is at radon's
complexity rank D or worse.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from radon.complexity import cc_rank, cc_visit

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "bolina_scaler"
MAX_LINES = 450
PACKAGES = sorted(p.parent for p in PACKAGE.glob("*/__init__.py"))
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if ".venv" not in p.parts)


def modules_of(package: Path) -> list[str]:
    return sorted(p.stem for p in package.glob("*.py") if p.stem != "__init__")


def readme_block() -> dict[str, str]:
    """The README's layout block: the text given for each ``name/`` (continuation lines included)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("  bolina_scaler/\n")
    block = text[start : text.index("```", start)]
    entries: dict[str, str] = {}
    current = None
    for line in block.splitlines()[1:]:
        match = re.match(r"^    (\w+)/\s", line)
        if match:
            current = match.group(1)
            entries[current] = line[match.end() :]
        elif current is not None and line.startswith("     "):
            entries[current] += " " + line.strip()
        else:
            current = None
    return entries


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.name)
def test_the_package_docstring_names_every_module(package: Path) -> None:
    """``pkg/__init__.py`` says what each of its modules is for (as ``module`` or ``module.Name``)."""
    doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text(encoding="utf-8"))) or ""
    missing = [m for m in modules_of(package) if not re.search(rf"``{m}(``|\.)", doc)]
    assert not missing, f"{package.name}/__init__.py's docstring does not name {missing}"


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.name)
def test_the_readme_layout_names_every_module(package: Path) -> None:
    """The README's layout block lists the package and each of its modules (testing/: the package alone)."""
    block = readme_block()
    assert package.name in block, f"README layout block has no {package.name}/"
    if package.name == "testing":
        return
    words = set(re.findall(r"\w+", block[package.name]))
    missing = [m for m in modules_of(package) if m not in words]
    assert not missing, f"README layout block's {package.name}/ does not name {missing}"


def test_the_readme_layout_names_every_top_level_module() -> None:
    """``config``, ``logs``, ``metrics`` and the others beside the subpackages are listed too."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("  bolina_scaler/\n")
    words = set(re.findall(r"\w+", text[start : text.index("```", start)]))
    top = sorted(p.stem for p in PACKAGE.glob("*.py") if not p.stem.startswith("__"))
    assert not [m for m in top if m not in words]


@pytest.mark.parametrize(
    "module", [m for m in MODULES if "testing" not in m.parts], ids=lambda p: str(p.relative_to(PACKAGE))
)
def test_no_module_is_over_the_size_limit(module: Path) -> None:
    """One concept per module: none outside testing/ has more than MAX_LINES lines."""
    lines = len(module.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{module.relative_to(ROOT)} has {lines} lines (limit {MAX_LINES})"


def test_no_block_is_at_radon_rank_d_or_worse() -> None:
    """No function, method or class has a cyclomatic complexity of 21 or more (radon's rank D)."""
    worst = []
    for module in MODULES:
        for block in cc_visit(module.read_text(encoding="utf-8")):
            if cc_rank(block.complexity) >= "D":
                worst.append(f"{module.relative_to(ROOT)}:{block.lineno} {block.name} ({block.complexity})")
    assert not worst, "\n".join(worst)
