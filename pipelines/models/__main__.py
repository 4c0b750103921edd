"""The model registry's command line.

    python -m pipelines.models list              # every version: stage, metrics, data hash, commit
    python -m pipelines.models promote V         # V decides; the previous production is archived
    python -m pipelines.models shadow V          # V is scored beside production (decides nothing)
    python -m pipelines.models candidate V       # register V, or move it back, as a candidate
    python -m pipelines.models archive V         # retire V
    python -m pipelines.models rollback          # the previous production decides again
    python -m pipelines.models ab V 0.1          # V decides for 10% of the customers (a stable hash); ab off ends it

``--model-dir`` defaults to fraud.model_dir. A running fraud job that follows the registry (fraud.model_version
"latest") picks up a new production within fraud.registry_poll_ms plus the load time, without a restart.
Exit status 2 (and the reason on stderr) when a rule refuses the change.
"""

from __future__ import annotations

import argparse
import json
import sys

from pipelines.models.registry import Registry, RegistryError


def _fmt(v) -> str:
    return "-" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))


def format_rows(rows: list[dict]) -> str:
    head = ("version", "stage", "AUC ROC", "AP", "card P@100", "data sha256", "commit", "since")
    lines = [head]
    for r in rows:
        m = r["metrics"]
        lines.append((r["version"] + ("" if r["artifact"] else " (artifact missing)"), r["stage"],
                      _fmt(m.get("auc_roc")), _fmt(m.get("average_precision")),
                      _fmt(m.get("card_precision_at_100")), (r["data_sha256"] or "-")[:12],
                      (r["git_commit"] or "-")[:12], (r["since"] or "-")[:19]))
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in lines)


def main(argv: list[str] | None = None) -> int:
    from pipelines.config import load_config

    cfg = load_config()
    ap = argparse.ArgumentParser(prog="python -m pipelines.models", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", default=str(cfg.path(cfg.fraud.model_dir)), help="default: fraud.model_dir")
    sub = ap.add_subparsers(dest="cmd", required=True)
    ls = sub.add_parser("list", help="every version with its stage")
    ls.add_argument("--json", action="store_true", help="machine-readable rows")
    for name in ("promote", "shadow", "candidate", "archive"):
        sub.add_parser(name, help=f"set a version's stage ({name})").add_argument("version")
    sub.add_parser("rollback", help="the previous production decides again")
    ab = sub.add_parser("ab", help="A/B: version V decides for FRACTION of the customers; 'ab off' ends it")
    ab.add_argument("version", help="a version, or 'off'")
    ab.add_argument("fraction", nargs="?", type=float)
    args = ap.parse_args(argv)
    reg = Registry(args.model_dir)
    try:
        if args.cmd == "list":
            rows = reg.rows()
            print(json.dumps(rows, indent=2) if args.json else format_rows(rows))
            return 0
        if args.cmd == "rollback":
            state = reg.rollback()
        elif args.cmd == "ab" and args.version == "off":
            state = reg.ab_off()
        elif args.cmd == "ab":
            if args.fraction is None:
                ap.error("ab V FRACTION: the fraction of customers V decides for")
            state = reg.ab(args.version, args.fraction)
        else:
            state = getattr(reg, args.cmd)(args.version)
    except RegistryError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    print(f"registry revision {state.revision}: production {state.production}"
          + (f", shadow {state.shadow}" if state.shadow else "")
          + (f", A/B {state.ab['version']} for {state.ab['fraction']:.1%} of customers" if state.ab else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
