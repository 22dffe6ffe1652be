"""Mutation score per module from ``mutmut results --all true``, and the surviving mutants.

Reads mutmut's listing on stdin (``<module>.x_<function>__mutmut_<n>: <status>``), prints one
row per module (killed, survived, score) and the survivors, and exits 1 when a module scores
under ``--min`` (percent). Timeouts count as killed, as mutmut counts them; mutants no test
reaches ("no tests") count as survivors: nothing would notice them either.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter, defaultdict

LINE = re.compile(r"^\s*(?P<name>[\w.]+?)\.x(?:ǁ\w+ǁ|_)(?P<func>\w+?)__mutmut_\d+: (?P<status>.+)$")
KILLED = {"killed", "timeout"}
NOT_RUN = {"not checked", "skipped"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min", type=float, default=90.0, help="lowest score per module (%%)")
    args = parser.parse_args()
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    survivors: dict[str, list[str]] = defaultdict(list)
    for raw in sys.stdin:
        match = LINE.match(raw)
        if not match:
            continue
        module, status = match["name"], match["status"].strip()
        counts[module][status] += 1
        if status not in KILLED | NOT_RUN:
            survivors[module].append(f"{raw.split(':')[0].strip()} ({status})")
    if not counts:
        print("mutation_score: no mutants in the listing; did mutmut run?", file=sys.stderr)
        return 2
    failing = []
    print(f"{'module':34} {'mutants':>7} {'killed':>7} {'survived':>8} {'not run':>7} {'score':>7}")
    for module in sorted(counts):
        c = counts[module]
        killed = sum(c[s] for s in KILLED)
        not_run = sum(c[s] for s in NOT_RUN)
        tested = sum(c.values()) - not_run
        score = 100.0 * killed / tested if tested else 0.0
        print(
            f"{module:34} {sum(c.values()):7} {killed:7} {tested - killed:8} {not_run:7}"
            f" {score:6.1f}%"
        )
        if score < args.min or not_run:
            failing.append(module)
    for module in sorted(survivors):
        print(f"\nsurvivors in {module}:")
        for name in survivors[module]:
            print(f"  {name}")
    if failing:
        print(f"\nunder {args.min:.0f}% or not fully run: {', '.join(failing)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
