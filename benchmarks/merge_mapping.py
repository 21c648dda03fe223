"""Join two concurrent invocations of benchmarks/mapping.py into benchmarks/results/mapping.json.

On a loaded machine the session ran the benchmark as two invocations of the same script at the same
time: one holding the long scvi-tools peers (written to mapping.json) and one holding the choice of
settings and everything chromtools, LSI and peak_matrix (--out mapping_core). This joins their task
results, keeps both invocations' metadata verbatim, and recomputes the targets over the union:

    python benchmarks/merge_mapping.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, write_results
from mapping import targets


def main() -> None:
    peers = json.loads((RESULTS / "mapping.json").read_text())
    core = json.loads((RESULTS / "mapping_core.json").read_text())
    if "invocations" in peers:
        sys.exit("mapping.json is already merged; re-run the benchmark invocations first")
    results = {}
    for name, res in peers["results"].items():
        results[name] = {**res, "invocation": "peers"}
    for name, res in core["results"].items():
        if res.get("ok") or name not in results or not results[name].get("ok"):
            results[name] = {**res, "invocation": "core"}
    meta = {k: v for k, v in peers.items() if k not in ("results", "targets")}
    merged = {
        "description": peers["description"],
        "note": __doc__.split("\n\n")[1].replace("\n", " "),
        "invocations": {
            "peers": {**meta, "targets_of_this_invocation_alone": peers["targets"]},
            "core": {k: v for k, v in core.items() if k not in ("results",)},
        },
        "results": results,
        "targets": targets(results),
    }
    write_results("mapping", merged)
    print(json.dumps(merged["targets"], indent=2))


if __name__ == "__main__":
    main()
