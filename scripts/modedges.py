#!/usr/bin/env python3
"""Every edge between the top-level modules of a Rust crate's src/, with the files that make it:
the companion of ../shared/tools/modcycles.py (same parsing: `crate::a` paths, doc links included,
test modules after `#[cfg(test)]` left out). Usage: scripts/modedges.py host/src"""
import pathlib, re, sys
src = pathlib.Path(sys.argv[1])
depth = int(sys.argv[2]) if len(sys.argv) > 2 else 1
def top(p):
    parts = p.relative_to(src).parts
    return parts[0].removesuffix(".rs")
edges = {}
for f in src.rglob("*.rs"):
    m = top(f)
    if m in ("main", "lib"): continue
    text = f.read_text(errors="replace").split("#[cfg(test)]")[0]
    names = set(re.findall(r"crate::([a-z_][a-z0-9_]*)", text))
    for grp in re.findall(r"crate::\{([^}]*)\}", text):
        names |= set(re.findall(r"(?:^|,)\s*([a-z_][a-z0-9_]*)", grp))
    for a in names - {m, "self"}:
        edges.setdefault(m, {}).setdefault(a, []).append(str(f.relative_to(src)))
for m in sorted(edges):
    for a in sorted(edges[m]):
        print(f"{m} -> {a}: {', '.join(sorted(set(edges[m][a])))}")
