#!/usr/bin/env python3
"""Pairs the tessera and torch RESULT lines of one GPU run into markdown tables with ratios.
Usage: report.py <log> [<log> ...]   (prints markdown; ratios > 1 mean tessera is faster)
"""
import sys


def parse(paths):
    rows = []
    for path in paths:
        for line in open(path, errors="replace"):
            if line.startswith("RESULT "):
                p = line.split()
                kv = dict(x.split("=", 1) for x in p[3:] if "=" in x)
                rows.append((p[1], p[2], kv))
    return rows


def main():
    rows = parse(sys.argv[1:])
    ours = [(k, kv) for who, k, kv in rows if who == "tessera"]
    torch = [(k, kv) for who, k, kv in rows if who == "torch"]

    def find(kind, **match):
        for k, kv in torch:
            if k == kind and all(kv.get(a) == str(b) for a, b in match.items()):
                return kv
        return None

    copy_t = next((kv for k, kv in ours if k == "copy"), None)
    copy_p = find("copy")
    out = ["## Copy bandwidth", "| who | GB/s (read + write) |", "|---|---|"]
    if copy_t:
        out.append(f"| tessera cudaMemcpy D2D | {copy_t['gbps']} |")
    if copy_p:
        out.append(f"| torch copy_ | {copy_p['gbps']} |")
    copy_bw = float(copy_t["gbps"]) if copy_t else None

    out += ["", "## GEMM (y = x wᵀ; torch: fp16/bf16 matmul of the same shape)",
            "| dtype | m | n | k | tessera ms | TFLOP/s | weight GB/s | CUDA-core kernel ms | torch ms | torch / tessera time |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for k, kv in ours:
        if k != "gemm":
            continue
        ref = find("gemm", dtype="bf16" if kv["dtype"] == "bf16" else "f16", m=kv["m"], n=kv["n"], k=kv["k"])
        ratio = f"{float(ref['ms']) / float(kv['ms']):.2f}" if ref else "-"
        out.append(f"| {kv['dtype']} | {kv['m']} | {kv['n']} | {kv['k']} | {kv['ms']} | {kv['tflops']} | "
                   f"{kv['weight_gbps']} | {kv.get('cuda_core_ms', '-')} | {ref['ms'] if ref else '-'} | {ratio} |")

    out += ["", "## Varlen prefill attention (torch: SDPA on the padded batch; TFLOP/s of useful causal pairs)",
            "| set | heads/kv/dim | seqs | tokens | tessera ms | TFLOP/s | CUDA-core kernel ms | torch ms | torch padded tokens | torch / tessera time |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for k, kv in ours:
        if k != "attn":
            continue
        ref = find("attn", set=kv["set"], heads=kv["heads"], kv_heads=kv["kv_heads"], head_dim=kv["head_dim"])
        ratio = f"{float(ref['ms']) / float(kv['ms']):.2f}" if ref else "-"
        out.append(f"| {kv['set']} | {kv['heads']}/{kv['kv_heads']}/{kv['head_dim']} | {kv['seqs']} | {kv['tokens']} | "
                   f"{kv['ms']} | {kv['tflops']} | {kv.get('cuda_core_ms', '-')} | {ref['ms'] if ref else '-'} | "
                   f"{ref['padded_tokens'] if ref else '-'} | {ratio} |")

    out += ["", "## Paged decode attention (one query per sequence; KV bytes read once; torch: SDPA on contiguous KV)",
            "| batch | context | tessera ms | KV GB/s | of copy bw | without splits ms | torch ms | torch / tessera time |",
            "|---|---|---|---|---|---|---|---|"]
    for k, kv in ours:
        if k != "decode":
            continue
        ref = find("decode", batch=kv["batch"], context=kv["context"])
        frac = f"{float(kv['kv_gbps']) / copy_bw:.0%}" if copy_bw else "-"
        ratio = f"{float(ref['ms']) / float(kv['ms']):.2f}" if ref else "-"
        out.append(f"| {kv['batch']} | {kv['context']} | {kv['ms']} | {kv['kv_gbps']} | {frac} | {kv.get('nosplit_ms', '-')} | "
                   f"{ref['ms'] if ref else '-'} | {ratio} |")

    out += ["", "## Prompt chunks over a paged prefix (tensor-core prefill vs the split-KV decode kernel for the same rows)",
            "| seqs | context | new queries | tensor cores ms | TFLOP/s | decode kernel ms |", "|---|---|---|---|---|---|"]
    for k, kv in ours:
        if k == "chunk":
            out.append(f"| {kv['seqs']} | {kv['context']} | {kv['nq']} | {kv['tc_ms']} | {kv['tc_tflops']} | {kv['decode_kernel_ms']} |")

    out += ["", "## End to end (synthetic TinyLlama-1.1B shape, CudaLlama)", "| what | dtype | detail | tokens/s |", "|---|---|---|---|"]
    for k, kv in ours:
        if k == "model_prefill":
            out.append(f"| prefill | {kv['dtype']} | {kv['seqs']} x {kv['len']} tokens, one step | {kv['tok_per_s']} |")
        elif k == "model_decode":
            out.append(f"| decode | {kv['dtype']} | batch {kv['batch']}, {kv['ms_per_step']} ms/step "
                       f"({kv.get('no_graphs_ms_per_step', '-')} without CUDA graphs), weights {kv['weights_gbps']} GB/s | {kv['tok_per_s']} |")
    for k, kv in [(k, kv) for who, k, kv in rows if who == "node"]:
        if k == "generate":
            out.append(f"| generate() via the API | f16 | batch {kv['batch']}, prompt {kv['prompt']}, {kv['new']} new tokens, "
                       f"{kv['wall_ms']} ms | {kv.get('decode_tok_per_s', kv.get('decode_tok_per_s_est'))} (decode) |")
    greedy = [kv for who, k, kv in rows if who == "node" and k == "greedy"]
    if greedy:
        out += ["", "## Greedy through the API: GPU vs CPU (stories260K)", "| model | same prefix tokens | of | near-ties |", "|---|---|---|---|"]
        for kv in greedy:
            out.append(f"| {kv['model']} | {kv['same_prefix_tokens']} | {kv['of']} | {kv['near_ties']} |")
    print("\n".join(out))


if __name__ == "__main__":
    main()
