"""Summarise an Autobahn|Testsuite fuzzingclient report (index.json).

usage: summarize.py REPORT_DIR AGENT SECONDS WSTEST_EXIT
Prints one 'AUTOBAHN SUMMARY:' line, the FAILED cases, the cases whose closing
handshake (behaviorClose) FAILED, and for each of those the suite's own verdict text.
Exit: 0 no case FAILED, 1 some case FAILED, 2 no usable report.
"""
import json
import os
import sys

ORDER = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]


def case_key(case_id):
    return [int(p) if p.isdigit() else p for p in case_id.split(".")]


def one_line(text, limit=300):
    text = " ".join(str(text or "").replace("<br>", " ").split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def main():
    report_dir, agent, seconds, wstest_rc = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    index_path = os.path.join(report_dir, "index.json")
    if not os.path.exists(index_path):
        print("AUTOBAHN ERROR: no index.json (wstest exit %d); see %s" % (wstest_rc, os.path.join(report_dir, "wstest.log")))
        return 2
    with open(index_path) as f:
        results = json.load(f).get(agent) or {}
    if not results:
        print("AUTOBAHN ERROR: the report has no results for agent %r (server unreachable?); see wstest.log" % agent)
        return 2

    counts = dict((k, 0) for k in ORDER)
    failed, close_failed = [], []
    for cid in sorted(results, key=case_key):
        r = results[cid]
        behavior = r.get("behavior", "?")
        counts[behavior] = counts.get(behavior, 0) + 1
        if behavior == "FAILED":
            failed.append(cid)
        if r.get("behaviorClose") == "FAILED":
            close_failed.append(cid)

    parts = ["%s=%d" % (k, counts[k]) for k in ORDER]
    parts += ["%s=%d" % (k, v) for k, v in sorted(counts.items()) if k not in ORDER]
    print("AUTOBAHN SUMMARY: %d cases: %s (%s s, wstest exit %d)" % (len(results), " ".join(parts), seconds, wstest_rc))
    print("FAILED cases: %s" % (" ".join(failed) if failed else "none"))
    print("behaviorClose FAILED cases: %s" % (" ".join(close_failed) if close_failed else "none"))

    for cid in sorted(set(failed) | set(close_failed), key=case_key):
        r = results[cid]
        detail = {}
        report = r.get("reportfile")
        if report and os.path.exists(os.path.join(report_dir, report)):
            with open(os.path.join(report_dir, report)) as f:
                detail = json.load(f)
        print("  %s [%s/close %s, remote close code %s]: %s" % (
            cid, r.get("behavior"), r.get("behaviorClose"), r.get("remoteCloseCode"),
            one_line(detail.get("description"), 160)))
        if r.get("behavior") == "FAILED":
            print("      result: %s" % one_line(detail.get("result")))
        if r.get("behaviorClose") == "FAILED":
            print("      close:  %s" % one_line(detail.get("resultClose")))
    print("report: %s" % os.path.join(report_dir, "index.html"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
