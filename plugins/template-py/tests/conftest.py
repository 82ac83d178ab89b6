"""Puts the plugin's sources and its generated bindings (`./test.sh` makes
them: `componentize-py -d wit -w backend-process bindings bindings`) on the path."""

import sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent
if not (root / "bindings" / "wit_world").is_dir():
    raise RuntimeError(f"no bindings in {root / 'bindings'}: run ./test.sh (it generates them)")
sys.path[:0] = [str(root / "src"), str(root / "bindings")]
