"""``python -m tests.scripts.study_dies CONFIG OUT K``: ``cxrlab run CONFIG --out OUT`` that
dies like a killed job (``os._exit(137)``: no cleanup, no tables) when it starts its K-th unit,
after claiming that unit's lock. Prints ``DYING <unit>`` first. For tests/test_study_shards.py."""
import os
import sys

from cxrlab import cli
from cxrlab.study.runner import _Runner


def main(config: str, out: str, k: int) -> int:
    real = _Runner.run_unit
    calls = []

    def run_unit(self, unit):
        calls.append(unit.name)
        if len(calls) == k:
            print(f"DYING {unit.name}", flush=True)
            os._exit(137)
        return real(self, unit)

    _Runner.run_unit = run_unit
    return cli.main(["run", config, "--out", out, "--profile", "ci"])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
