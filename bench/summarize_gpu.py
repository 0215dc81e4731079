"""Summarise the records of bench/gpu_check.sh: status, accuracy, time and peak GPU memory per task (JSON)."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(dirs: list[str]) -> dict:
    out = {}
    for d in dirs:
        for path in sorted(Path(d, "records").glob("*.json")):
            rec = json.loads(path.read_text())
            entry = {"status": rec["status"], "device": rec.get("provenance", {}).get("device")}
            if rec["status"] == "done":
                entry.update(acc=round(rec["metrics"]["acc"], 2), total_s=round(rec["timings"]["total_s"], 1),
                             train_s_per_task=[round(s, 2) for s in rec["timings"]["train_s"]],
                             peak_mem_mb=[round(m) if m is not None else None for m in rec["efficiency"]["peak_mem_mb"]],
                             gflops=rec["efficiency"]["gflops"])
            else:
                entry["error"] = (rec.get("error") or "").strip().splitlines()[-1:]
            out[f"{Path(d).name}/{rec['job_id']}"] = entry
    for key, entry in out.items():
        print(key, json.dumps(entry))
    summary = {k: {"status": v["status"], "peak_mem_mb_first_last": (v.get("peak_mem_mb") or [None])[::max(1, len(v.get("peak_mem_mb") or [1]) - 1)]}
               for k, v in out.items()}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
