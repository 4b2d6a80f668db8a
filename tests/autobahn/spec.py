"""Write the wstest fuzzingclient spec (JSON) to stdout.

usage: spec.py URL AGENT OUTDIR CASES EXCLUDE   (CASES/EXCLUDE: comma-separated patterns)
"""
import json
import sys


def patterns(text):
    return [p.strip() for p in text.split(",") if p.strip()]


def main():
    url, agent, outdir, cases, exclude = sys.argv[1:6]
    spec = {
        "outdir": outdir,
        "servers": [{"agent": agent, "url": url}],
        "cases": patterns(cases) or ["*"],
        "exclude-cases": patterns(exclude),
        "exclude-agent-cases": {},
    }
    json.dump(spec, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
