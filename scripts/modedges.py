#!/usr/bin/env python3
"""Every edge between the top-level modules of a Rust crate's src/, with the files that make it:
the companion of ../shared/tools/modcycles.py (same parsing: `crate::a` paths, doc links included,
test modules after `#[cfg(test)]` left out).

Usage: scripts/modedges.py host/src           print every edge
       scripts/modedges.py host/src --check   also fail on an edge that does not go down LAYERS
"""
import pathlib, re, sys

# host/src's folders, top to bottom (ARCHITECTURE.md, "The source tree"): a module may use
# only modules on a later line. Modules on one line are peers and use none of each other.
LAYERS = [["cli"], ["daemon"], ["submit"], ["runtime"], ["store", "supervise"], ["sys"]]

src = pathlib.Path(sys.argv[1])
edges = {}
for f in src.rglob("*.rs"):
    m = f.relative_to(src).parts[0].removesuffix(".rs")
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

if "--check" in sys.argv[2:]:
    rank = {m: i for i, line in enumerate(LAYERS) for m in line}
    tops = {p.name.removesuffix(".rs") for p in src.iterdir()} - {"main", "lib"}
    bad = [f"`{m}` is in no layer: add it to LAYERS (and ARCHITECTURE.md)" for m in sorted(tops - set(rank))]
    for m in sorted(edges):
        for a in sorted(edges[m]):
            if a in rank and m in rank and rank[a] <= rank[m]:
                bad.append(f"{m} -> {a} goes up or across the layers ({', '.join(sorted(set(edges[m][a])))})")
    for b in bad: print("error:", b, file=sys.stderr)
    print(f"{len(tops)} top-level modules, {len(bad)} edges against the layers", file=sys.stderr)
    sys.exit(1 if bad else 0)
