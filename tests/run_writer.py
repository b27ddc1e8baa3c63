"""A test-only stage: writes a small train-like run into OUT through the same artifacts API
the real stages use (staged_dir, meta.json hashes), slowly enough that tests can kill it,
race it or signal it at any point. Usage: python run_writer.py OUT TAG [HOLD_SECONDS]

Exit codes and messages as the CLI's: a PrivtoolError is one line on stderr and exit 1; an
interrupt (SIGINT, or SIGTERM through the CLI's handler) exits 130.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

from privtool.artifacts import file_hash, staged_dir
from privtool.cli import _on_sigterm
from privtool.errors import PrivtoolError


def write(out: Path, tag: str, hold: float) -> None:
    with staged_dir(out) as tmp:
        print(f"staging {tmp}", flush=True)
        names = []
        for i in range(5):  # payload written in steps, like checkpoints
            (tmp / f"part-{i}.bin").write_bytes(tag.encode() * 20000)
            names.append(f"part-{i}.bin")
            time.sleep(hold / 5)
        (tmp / "metrics.json").write_text(json.dumps({"tag": tag}))
        names.append("metrics.json")
        meta = {"stage": "train", "outputs": {n: file_hash(tmp / n) for n in names}}
        (tmp / "meta.json").write_text(json.dumps(meta))


def main() -> int:
    signal.signal(signal.SIGTERM, _on_sigterm)
    out, tag = Path(sys.argv[1]), sys.argv[2]
    hold = float(sys.argv[3]) if len(sys.argv) > 3 else 0.2
    try:
        write(out, tag, hold)
    except PrivtoolError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; nothing was written", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
