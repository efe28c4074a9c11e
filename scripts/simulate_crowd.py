"""Virtual volunteers that label a real Label Studio project the way people do in the UI.

A thin command line over :mod:`medcrowd.volunteer_sim` (the volunteers, their annotator
models and the queue loop live there): each volunteer is a real account, signed up through
the organisation's link or reused from ``--accounts``, that takes tasks from the queue, asks
the ML backend for a mask through Label Studio for a box around the structure as its model
perceives it, corrects the mask and submits. Seeded (``--seed``). Prints the counts as JSON.

The Label Studio is found as by every ``medcrowd`` command (``--url``/``--token``, else
``MEDCROWD_URL``/``MEDCROWD_TOKEN``, else the instance ``medcrowd up`` runs from
``--data-dir``).

    python scripts/simulate_crowd.py --project "medcrowd demo" --truth masks/ \\
        --models good,good,sloppy,dilate,spammer_blobs --url http://127.0.0.1:8080 --token T
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from medcrowd.connection import open_studio  # noqa: E402
from medcrowd.volunteer_sim import CrowdOptions, run_crowd  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--url", default=os.environ.get("MEDCROWD_URL"), help="Label Studio URL")
    ap.add_argument("--token", default=os.environ.get("MEDCROWD_TOKEN"), help="admin token")
    ap.add_argument("--data-dir", type=Path, default=os.environ.get("MEDCROWD_HOME"),
                    help="medcrowd up's data directory (used without --url/--token)")  # fmt: skip
    ap.add_argument("--project", required=True, help="project id or title")
    ap.add_argument("--truth", required=True, help="folder of expert masks <image stem>.png")
    ap.add_argument("--models", default="good,good,sloppy,dilate,spammer_blobs",
                    help="comma-separated annotator models, one volunteer each")  # fmt: skip
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--label", default="Organ")
    ap.add_argument("--box-jitter", type=float, default=3.0, help="px each box edge may move")
    ap.add_argument("--min-fix", type=int, default=20, help="smallest error region fixed (px)")
    ap.add_argument("--accounts", default="simulated-volunteers.json",
                    help="where volunteer tokens are kept (0600) for re-runs")  # fmt: skip
    ap.add_argument("--max-seconds", type=float, default=3600.0)
    args = ap.parse_args()
    options = CrowdOptions(
        models=[m.strip() for m in args.models.split(",") if m.strip()],
        truth=Path(args.truth),
        accounts=Path(args.accounts),
        seed=args.seed,
        label=args.label,
        box_jitter=args.box_jitter,
        min_fix=args.min_fix,
        max_seconds=args.max_seconds,
    )
    try:
        stats = run_crowd(open_studio(args.url, args.token, args.data_dir), args.project, options)
    except (ValueError, RuntimeError, OSError) as exc:
        raise SystemExit(f"error: {' '.join(str(exc).split())}") from None
    print(json.dumps(stats, indent=2))


if __name__ == "__main__":
    main()
