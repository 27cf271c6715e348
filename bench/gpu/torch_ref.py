#!/usr/bin/env python3
"""PyTorch reference timings for the GPU benchmark plan (see plan.py): the same shapes, on the same
card, in the same run as native/bench/cuda_bench.cu. Prints "RESULT torch <kind> key=value ..." lines.

  copy    tensor.copy_ of the same bytes
  gemm    torch.matmul in fp16 / bf16 (quantised dtypes are compared with torch's fp16 of the shape)
  attn    scaled_dot_product_attention (fp16, causal, GQA via enable_gqa) on the PADDED batch of the
          same lengths: (B, H, max_len, D). FLOP/s counts only the useful causal pairs, like ours.
  decode  SDPA of one query per sequence over a contiguous (not paged) fp16 KV of the same size
Usage: torch_ref.py <plan.txt>
"""
import statistics
import sys

import torch
import torch.nn.functional as F


def time_ms(fn, budget_ms=300.0):
    fn(0)
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def once(i):
        a.record()
        fn(i)
        b.record()
        b.synchronize()
        return a.elapsed_time(b)

    first = once(1)
    reps = int(min(200, max(3, budget_ms / max(first, 1e-3))))
    return statistics.median(once(i + 2) for i in range(reps))


def main():
    dev = torch.device("cuda")
    print("# torch", torch.__version__, torch.cuda.get_device_name(0), flush=True)
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    done_gemm = set()
    for line in open(sys.argv[1]):
        p = line.split()
        if not p or p[0].startswith("#"):
            continue
        kind = p[0]
        try:
            if kind == "copy":
                n = int(p[1])
                src = torch.randint(0, 255, (n,), dtype=torch.uint8, device=dev)
                dst = torch.empty_like(src)
                ms = time_ms(lambda i: dst.copy_(src))
                print(f"RESULT torch copy bytes={n} ms={ms:.4f} gbps={2 * n / ms / 1e6:.1f}", flush=True)
            elif kind == "gemm":
                dt, m, n, k = p[1], int(p[2]), int(p[3]), int(p[4])
                tdt = torch.bfloat16 if dt == "bf16" else torch.float16
                key = (tdt, m, n, k)
                if key in done_gemm:
                    continue
                done_gemm.add(key)
                copies = max(1, min(16, 3 * l2 // (n * k * 2) + 1))
                ws = [torch.empty(n, k, dtype=tdt, device=dev).uniform_(-1, 1) for _ in range(copies)]
                x = torch.empty(m, k, dtype=tdt, device=dev).uniform_(-1, 1)
                ms = time_ms(lambda i: torch.matmul(x, ws[i % copies].t()))
                name = "bf16" if tdt == torch.bfloat16 else "f16"
                print(f"RESULT torch gemm dtype={name} m={m} n={n} k={k} ms={ms:.4f} "
                      f"tflops={2 * m * n * k / ms / 1e9:.2f} weight_gbps={n * k * 2 / ms / 1e6:.1f}", flush=True)
            elif kind == "attn":
                name, hq, hkv, d = p[1], int(p[2]), int(p[3]), int(p[4])
                lens = [int(v) for v in p[5:]]
                B, L = len(lens), max(lens)
                q = torch.empty(B, hq, L, d, dtype=torch.float16, device=dev).uniform_(-1, 1)
                k = torch.empty(B, hkv, L, d, dtype=torch.float16, device=dev).uniform_(-1, 1)
                v = torch.empty(B, hkv, L, d, dtype=torch.float16, device=dev).uniform_(-1, 1)
                ms = time_ms(lambda i: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=hq != hkv))
                useful = sum(4.0 * d * hq * n * (n + 1) / 2 for n in lens)
                padded = 4.0 * d * hq * B * L * (L + 1) / 2
                print(f"RESULT torch attn set={name} heads={hq} kv_heads={hkv} head_dim={d} seqs={B} "
                      f"tokens={sum(lens)} padded_tokens={B * L} ms={ms:.4f} tflops={useful / ms / 1e9:.2f} "
                      f"padded_tflops={padded / ms / 1e9:.2f}", flush=True)
            elif kind == "decode":
                batch, ctx, hq, hkv, d = (int(v) for v in p[1:6])
                q = torch.empty(batch, hq, 1, d, dtype=torch.float16, device=dev).uniform_(-1, 1)
                k = torch.empty(batch, hkv, ctx, d, dtype=torch.float16, device=dev).uniform_(-1, 1)
                v = torch.empty(batch, hkv, ctx, d, dtype=torch.float16, device=dev).uniform_(-1, 1)
                ms = time_ms(lambda i: F.scaled_dot_product_attention(q, k, v, enable_gqa=hq != hkv))
                kv_bytes = 2.0 * batch * ctx * hkv * d * 2
                print(f"RESULT torch decode batch={batch} context={ctx} heads={hq} kv_heads={hkv} head_dim={d} "
                      f"ms={ms:.4f} kv_gbps={kv_bytes / ms / 1e6:.1f}", flush=True)
                del q, k, v
            torch.cuda.empty_cache()
        except Exception as e:  # one failed shape must not hide the others
            print(f"ERROR torch {line[:80].strip()}: {e}", flush=True)
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
