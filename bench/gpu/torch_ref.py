#!/usr/bin/env python3
"""The reference run for bench_gpu (`--moe`: only the MoE layer), in PyTorch on the same GPU: FP8 GEMM through torch._scaled_mm
(row-wise scales: PyTorch's fastest FP8 path; block-wise where this PyTorch supports it) and BF16
GEMM through torch.matmul, at the same R1 shapes. Median of 20 timed runs after warm-up."""
import sys

import torch

SHAPES = [("q_a_proj", 1536, 7168), ("q_b_proj", 24576, 1536), ("kv_a_proj", 576, 7168),
          ("kv_b_proj", 32768, 512), ("o_proj", 7168, 16384), ("expert gate/up", 2048, 7168),
          ("expert down", 7168, 2048)]


def time_us(f, reps=20):
    for _ in range(3):
        f()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); f(); b.record(); b.synchronize()
        ts.append(a.elapsed_time(b) * 1000)
    ts.sort()
    return ts[len(ts) // 2]


def moe_layer_bench():
    """bench_gpu's MoE layer in PyTorch: float32 router, grouped top-k (8 groups keep 4, top 8),
    tokens sorted by expert, per touched expert FP8 torch._scaled_mm gate/up (row-wise activation
    scales), SiLU*up, FP8 down, weighted index_add into the float32 output."""
    E, inter, hd, topk = 256, 2048, 7168, 8
    dev = "cuda"
    codes = lambda *shape: (torch.randint(0, 256, shape, dtype=torch.uint8, device=dev) & 0xBF).view(torch.float8_e4m3fn)
    wg, wu, wd = codes(E, inter, hd), codes(E, inter, hd), codes(E, hd, inter)
    wr = torch.randn(E, hd, device=dev) * 0.02
    bias = torch.randn(E, device=dev) * 0.01
    ones_i, ones_h = torch.full((1, inter), 0.01, device=dev), torch.full((1, hd), 0.01, device=dev)

    def quant(x):
        m = x.shape[0]
        mp = max(16, (m + 15) // 16 * 16)
        xp = torch.zeros(mp, x.shape[1], device=dev, dtype=torch.float32)
        xp[:m] = x.float()
        amax = xp.abs().amax(dim=1, keepdim=True).clamp(min=1e-12)
        return (xp * (448.0 / amax)).to(torch.float8_e4m3fn), amax / 448.0, m

    def layer(xf, xb):
        T = xf.shape[0]
        s = torch.sigmoid(xf @ wr.t())
        b = s + bias
        gs = b.view(T, 8, E // 8).topk(2, dim=-1).values.sum(-1)
        keep = torch.zeros(T, 8, device=dev, dtype=torch.bool).scatter_(1, gs.topk(4, dim=-1).indices, True)
        b = b.masked_fill(~keep.repeat_interleave(E // 8, dim=1), float("-inf"))
        ids = b.topk(topk, dim=-1).indices
        w = s.gather(1, ids)
        w = w / (w.sum(-1, keepdim=True) + 1e-20) * 2.5
        flat = ids.flatten()
        order = torch.argsort(flat, stable=True)
        counts = torch.bincount(flat, minlength=E).tolist()
        tok = order // topk
        wsort = w.flatten()[order]
        out = torch.zeros(T, hd, device=dev)
        start = 0
        for e, c in enumerate(counts):
            if c == 0:
                continue
            t_idx = tok[start:start + c]
            xq, sa, m = quant(xb[t_idx])
            g = torch._scaled_mm(xq, wg[e].t(), scale_a=sa, scale_b=ones_i, out_dtype=torch.bfloat16)[:m]
            u = torch._scaled_mm(xq, wu[e].t(), scale_a=sa, scale_b=ones_i, out_dtype=torch.bfloat16)[:m]
            aq, sa2, _ = quant(torch.nn.functional.silu(g) * u)
            y = torch._scaled_mm(aq, wd[e].t(), scale_a=sa2, scale_b=ones_h, out_dtype=torch.bfloat16)[:m]
            out.index_add_(0, t_idx, y.float() * wsort[start:start + c, None])
            start += c
        return out, len([c for c in counts if c])

    for T in (1, 8, 64, 256, 4096):
        xf = torch.randn(T, hd, device=dev)
        xb = xf.to(torch.bfloat16)
        touched = layer(xf, xb)[1]
        us = time_us(lambda: layer(xf, xb), reps=3 if T >= 4096 else 20)
        fl = 2.0 * T * topk * 3 * inter * hd + 2.0 * T * E * hd
        by = touched * 3.0 * inter * hd + E * hd * 4
        print(f"torch moe layer tokens={T:<5d} experts touched={touched:3d}: {us:9.1f} us "
              f"({fl / us / 1e6:7.1f} TFLOP/s, {by / us / 1e3:7.0f} GB/s)")


def main():
    print("torch", torch.__version__, torch.cuda.get_device_name())
    if "--moe" in sys.argv:
        moe_layer_bench()
        return
    for name, n, k in SHAPES:
        for m in (1, 8, 64, 256, 4096):
            x = torch.randn(m, k, device="cuda").to(torch.float8_e4m3fn)
            w = torch.randn(n, k, device="cuda").to(torch.float8_e4m3fn)
            sa = torch.ones(m, 1, device="cuda")
            sb = torch.ones(1, n, device="cuda")
            mp = max(16, (m + 15) // 16 * 16)
            xp = torch.zeros(mp, k, device="cuda").to(torch.float8_e4m3fn)
            sap = torch.ones(mp, 1, device="cuda")
            try:
                us = time_us(lambda: torch._scaled_mm(xp, w.t(), scale_a=sap, scale_b=sb, out_dtype=torch.bfloat16))
                kind = "scaled_mm rowwise"
            except Exception as e:  # noqa: BLE001
                us, kind = float("nan"), f"scaled_mm unavailable ({type(e).__name__})"
            xb = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            wb = torch.randn(n, k, device="cuda", dtype=torch.bfloat16)
            ub = time_us(lambda: xb @ wb.t())
            fl = 2.0 * m * n * k
            print(f"torch {name:15s} M={m:<5d} N={n:<6d} K={k}: fp8 {us:9.1f} us ({fl / us / 1e6:7.1f} TFLOP/s, {kind}); "
                  f"bf16 {ub:9.1f} us ({fl / ub / 1e6:7.1f} TFLOP/s)")


if __name__ == "__main__":
    main()
