"""Mutation score per module from ``mutmut results --all true``, and the surviving mutants.

Reads mutmut's listing on stdin (``<module>.x_<function>__mutmut_<n>: <status>``) and the
equivalent mutants argued in docs/testing.md (the names in its tables), prints one row per
module and the survivors nobody explained, and exits 1 when a module scores under ``--min``
percent. The score is killed / (mutants - equivalent): an equivalent mutant behaves as the code
does, so no test can kill it; the raw score (killed / mutants) is printed beside it. Timeouts
count as killed, as mutmut counts them; mutants no test reaches ("no tests") count as
survivors: nothing would notice them either.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

LINE = re.compile(r"^\s*(?P<name>[\w.]+?)\.x(?:ǁ\w+ǁ|_)(?P<func>\w+?)__mutmut_\d+: (?P<status>.+)$")
KILLED = {"killed", "timeout"}
NOT_RUN = {"not checked", "skipped"}
#: A table row of docs/testing.md that names a mutant: | `harness.x.x_f__mutmut_3` | ...
DOCUMENTED = re.compile(r"^\|\s*`?([^\s|`]+__mutmut_\d+)`?\s*\|", re.M)
DOCS = Path(__file__).resolve().parents[1] / "docs" / "testing.md"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min", type=float, default=90.0, help="lowest score per module (%%)")
    parser.add_argument("--docs", type=Path, default=DOCS, help="where equivalents are argued")
    args = parser.parse_args()
    equivalent = set(DOCUMENTED.findall(args.docs.read_text(encoding="utf-8")))
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    survivors: dict[str, list[str]] = defaultdict(list)
    for raw in sys.stdin:
        match = LINE.match(raw)
        if not match:
            continue
        module, status = match["name"], match["status"].strip()
        name = raw.split(": ")[0].strip()
        if status not in KILLED | NOT_RUN and name in equivalent:
            status = "equivalent"
        counts[module][status] += 1
        if status not in KILLED | NOT_RUN | {"equivalent"}:
            survivors[module].append(f"{name} ({status})")
    if not counts:
        print("mutation_score: no mutants in the listing; did mutmut run?", file=sys.stderr)
        return 2
    failing = []
    print(
        f"{'module':30} {'mutants':>7} {'killed':>6} {'equiv.':>6} {'survived':>8}"
        f" {'not run':>7} {'raw':>6} {'score':>6}"
    )
    for module in sorted(counts):
        c = counts[module]
        killed = sum(c[s] for s in KILLED)
        not_run = sum(c[s] for s in NOT_RUN)
        tested = sum(c.values()) - not_run
        raw = 100.0 * killed / tested if tested else 0.0
        judged = tested - c["equivalent"]
        score = 100.0 * killed / judged if judged else 0.0
        print(
            f"{module:30} {sum(c.values()):7} {killed:6} {c['equivalent']:6}"
            f" {judged - killed:8} {not_run:7} {raw:5.1f}% {score:5.1f}%"
        )
        if tested and (score < args.min or not_run):  # untouched modules: a run by name
            failing.append(module)
    for module in sorted(survivors):
        print(f"\nsurvivors in {module}, neither killed nor argued in {args.docs.name}:")
        for name in survivors[module]:
            print(f"  {name}")
    if failing:
        print(f"\nunder {args.min:.0f}% or not fully run: {', '.join(failing)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
