"""No code from data: an AST scan of the toolkit's Python for every way a data file could make
it run code. The only exception allowed is the opted-in pickle reader carcli/data/lidc.py
(data.allow_pickle), and there only pickle itself."""

from __future__ import annotations

import ast
from pathlib import Path

from reliability import REPO

SCANNED = ("carcli", "scripts", "bench", "experiments")
PICKLE_READER = "carcli/data/lidc.py"
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve"}
UNSAFE_MODULES = PICKLE_MODULES | {"marshal"}
YAML_UNSAFE = {"load", "load_all", "unsafe_load", "unsafe_load_all", "full_load", "full_load_all"}
YAML_UNSAFE_LOADERS = {"Loader", "UnsafeLoader", "FullLoader", "CLoader", "CUnsafeLoader"}
PICKLE_CALLS = {"read_pickle", "to_pickle"}  # pandas


def _dotted(node: ast.AST) -> str:
    """`a.b.c` for an attribute chain, else ''."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def _kw(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_const(node: ast.expr | None, value: object) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def findings(source: str) -> list[tuple[int, str]]:
    """(line, what) for every construct that could run code from a data file."""
    tree = ast.parse(source)
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in UNSAFE_MODULES:
                    out.append((node.lineno, f"import {alias.name}"))
        elif isinstance(node, ast.ImportFrom):
            module = (node.module or "").split(".")[0]
            names = {a.name for a in node.names}
            if module in UNSAFE_MODULES:
                out.append((node.lineno, f"from {node.module} import ..."))
            if module == "yaml" and names & (YAML_UNSAFE | YAML_UNSAFE_LOADERS):
                out.append((node.lineno, f"from yaml import {sorted(names)}"))
            if module == "torch" and "load" in names:
                out.append((node.lineno, "from torch import load"))
        elif isinstance(node, ast.Attribute):
            name = _dotted(node)
            if name.startswith("yaml.") and node.attr in YAML_UNSAFE_LOADERS:
                out.append((node.lineno, name))
        elif isinstance(node, ast.Call):
            func = _dotted(node.func)
            last = func.rsplit(".", 1)[-1]
            if func in ("eval", "exec", "compile", "__import__", "builtins.eval", "builtins.exec"):
                out.append((node.lineno, f"{func}()"))
            elif func.startswith("yaml.") and last in YAML_UNSAFE:
                out.append((node.lineno, f"{func}()"))
            elif func == "torch.load" and not _is_const(_kw(node, "weights_only"), True):
                out.append((node.lineno, "torch.load() without weights_only=True"))
            elif last == "load" and func.split(".")[0] in ("np", "numpy"):
                if not _is_const(_kw(node, "allow_pickle"), False) and _kw(node, "allow_pickle"):
                    out.append((node.lineno, "np.load(allow_pickle=...)"))
            elif last in PICKLE_CALLS:
                out.append((node.lineno, f"{func}()"))
            elif func in ("os.system", "os.popen") or func.startswith("os.exec"):
                out.append((node.lineno, f"{func}()"))
            elif func.startswith("subprocess.") and not _is_const(_kw(node, "shell"), False):
                if _kw(node, "shell") is not None:
                    out.append((node.lineno, f"{func}(shell=...)"))
    return out


def _sources() -> list[Path]:
    return sorted(p for d in SCANNED for p in (REPO / d).rglob("*.py") if ".venv" not in p.parts)


def test_no_code_from_data() -> None:
    bad = []
    for path in _sources():
        rel = path.relative_to(REPO).as_posix()
        for line, what in findings(path.read_text(encoding="utf-8")):
            pickle_only = "read_pickle" in what or (
                what.split()[0] in ("import", "from")
                and any(m in what.replace(".", " ").split() for m in PICKLE_MODULES)
            )
            if rel == PICKLE_READER and pickle_only:
                continue
            bad.append(f"{rel}:{line}: {what}")
    assert not bad, "code could run from a data file:\n" + "\n".join(bad)
    assert len(_sources()) > 50  # the scan saw the package


def test_the_scan_finds_each_pattern() -> None:
    """The scanner is not vacuous: each forbidden construct is reported, safe ones are not."""
    unsafe = {
        "import pickle": "import pickle",
        "import dill as d": "import dill",
        "from pickle import loads": "from pickle",
        "import marshal": "import marshal",
        "torch.load(f)": "torch.load()",
        "torch.load(f, weights_only=False)": "torch.load()",
        "from torch import load": "from torch import load",
        "yaml.load(text)": "yaml.load()",
        "yaml.unsafe_load(text)": "yaml.unsafe_load()",
        "yaml.full_load(text)": "yaml.full_load()",
        "yaml.load(text, Loader=yaml.Loader)": "yaml.Loader",
        "from yaml import load": "from yaml import",
        "eval(s)": "eval()",
        "exec(s)": "exec()",
        "np.load(p, allow_pickle=True)": "np.load(",
        "numpy.load(p, allow_pickle=flag)": "np.load(",
        "pd.read_pickle(p)": "read_pickle()",
        "subprocess.run(cmd, shell=True)": "shell=",
        "os.system(cmd)": "os.system()",
    }
    for code, expected in unsafe.items():
        found = findings(code)
        assert any(expected in what for _, what in found), (code, found)
    safe = [
        "torch.load(f, weights_only=True)",
        "yaml.safe_load(text)",
        "yaml.safe_dump(obj)",
        "np.load(p)",
        "np.load(p, allow_pickle=False)",
        "subprocess.run(['ls'], check=True)",
        "re.compile('x')",
        "model.eval()",
        "torch.compile(model)",
        "json.loads(text)",
    ]
    for code in safe:
        assert findings(code) == [], code
