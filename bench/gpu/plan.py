#!/usr/bin/env python3
"""Writes the GPU benchmark plan (one measurement per line) from bench/gpu/shapes.json.

Both native/bench/cuda_bench.cu (tessera) and bench/gpu/torch_ref.py (PyTorch) read this plan, so
they time exactly the same shapes and sequence lengths.
Usage: plan.py <shapes.json> <vocab.gguf> > plan.txt
"""
import json
import math
import sys


def lengths(spec):
    """Deterministic pseudo-random lengths (a 64-bit LCG), uniform or log-uniform in [min, max]."""
    x = spec["seed"] * 0x9E3779B97F4A7C15 % 2**64
    out = []
    for _ in range(spec["count"]):
        x = (x * 6364136223846793005 + 1442695040888963407) % 2**64
        u = (x >> 11) / float(2**53)
        lo, hi = spec["min"], spec["max"]
        if spec.get("log_uniform"):
            n = int(math.exp(math.log(lo) + u * (math.log(hi + 1) - math.log(lo))))
        else:
            n = lo + int(u * (hi - lo + 1))
        out.append(max(lo, min(hi, n)))
    return out


def main():
    shapes = json.load(open(sys.argv[1]))
    vocab = sys.argv[2]
    print("copy", 2 << 30)
    g = shapes["gemm"]
    for n, k in g["nk"]:
        for dt in g["dtypes"]:
            for m in g["mnk_rows"]:
                if dt in ("q8_0", "q4_k") and m not in (1, 16, 512):
                    continue  # decode, a short batch, a prefill: enough for the quantised types
                print("gemm", dt, m, n, k)
    for a in shapes["attention"]:
        for name, spec in shapes["length_sets"].items():
            print("attn", name, a["heads"], a["kv_heads"], a["head_dim"], *lengths(spec))
    d = shapes["decode"]
    for b in d["batches"]:
        for c in d["contexts"]:
            print("decode", b, c, d["heads"], d["kv_heads"], d["head_dim"], d["page_size"])
    c = shapes["chunk"]
    for ctx in c["contexts"]:
        for nq in c["nq"]:
            print("chunk", c["seqs"], ctx, nq, c["heads"], c["kv_heads"], c["head_dim"], c["page_size"])
    m = shapes["model"]
    for dt in m["dtypes"]:
        for db in m["decode_batches"]:
            print("model", dt, m["dim"], m["layers"], m["heads"], m["kv_heads"], m["ff"], m["prefill_seqs"],
                  m["prefill_len"], db, m["decode_steps"], vocab)


if __name__ == "__main__":
    main()
