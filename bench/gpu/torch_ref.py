#!/usr/bin/env python3
"""The reference run for bench_gpu (`--moe`: only the MoE layer; `--layer`: a whole MoE layer for
bench_gpu_layer), in PyTorch on the same GPU, at the same R1 shapes: FP8 GEMM through
torch._scaled_mm (DeepSeek's 1x128 / 128x128 block scales where this PyTorch and cuBLAS have them,
else row-wise scales) and BF16 GEMM through torch.matmul, device time from CUDA-graph replays; the
layers eager (as a torch layer runs), median of 20 timed runs after warm-up."""
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


def fp8_codes(*shape):
    """Random finite e4m3 codes (bit 6 cleared: no NaN), as bench_gpu's random FP8 data."""
    return (torch.randint(0, 256, shape, dtype=torch.uint8, device="cuda") & 0xBF).view(torch.float8_e4m3fn)


def graph_us(f, per_graph=20, reps=10):
    """Device time of one f() from replays of a CUDA graph holding `per_graph` calls (no host work
    between them, as decode runs and as bench_gpu's TimeGraphUs measures)."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            f()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(per_graph):
            f()
    g.replay()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); g.replay(); b.record(); b.synchronize()
        ts.append(a.elapsed_time(b) * 1000 / per_graph)
    ts.sort()
    return ts[len(ts) // 2]


def make_moe():
    """bench_gpu's MoE layer in PyTorch: float32 router, grouped top-k (8 groups keep 4, top 8),
    tokens sorted by expert, per touched expert FP8 torch._scaled_mm gate/up (row-wise activation
    scales), SiLU*up, FP8 down, weighted index_add into the float32 output. Returns
    layer(x float32, x bf16) -> (routed output float32, experts touched)."""
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

    return layer


def moe_layer_bench():
    E, inter, hd, topk = 256, 2048, 7168, 8
    dev = "cuda"
    layer = make_moe()
    for T in (1, 8, 64, 256, 4096):
        xf = torch.randn(T, hd, device=dev)
        xb = xf.to(torch.bfloat16)
        touched = layer(xf, xb)[1]
        us = time_us(lambda: layer(xf, xb), reps=3 if T >= 4096 else 20)
        fl = 2.0 * T * topk * 3 * inter * hd + 2.0 * T * E * hd
        by = touched * 3.0 * inter * hd + E * hd * 4
        print(f"torch moe layer tokens={T:<5d} experts touched={touched:3d}: {us:9.1f} us "
              f"({fl / us / 1e6:7.1f} TFLOP/s, {by / us / 1e3:7.0f} GB/s)")


def full_layer_bench(ctx=4096):
    """bench_gpu_layer's MoE layer in PyTorch, one decode step at context `ctx`: RMSNorm, MLA in the
    absorbed form over a contiguous bf16 latent cache [B, ctx + 1, 576] (q_a -> norm -> q_b, kv_a ->
    norm, rotary on the 64 rope dims, q_nope folded through kv_b's K half, scores over the latent
    and rope parts, softmax, weighted latent sum, kv_b's V half, o_proj), the residual, RMSNorm, the
    routed experts of make_moe() and the shared expert. Every linear layer FP8 through
    torch._scaled_mm (row-wise activation scales); eager, as a torch layer runs."""
    dev, hd, nh, qr, kvr, rope, nope, vd = "cuda", 7168, 128, 1536, 512, 64, 128, 128
    codes = lambda *shape: (torch.randint(0, 256, shape, dtype=torch.uint8, device=dev) & 0xBF).view(torch.float8_e4m3fn)
    w_qa, w_qb, w_kva, w_o = codes(qr, hd), codes(nh * (nope + rope), qr), codes(kvr + rope, hd), codes(hd, nh * vd)
    w_sg, w_su, w_sd = codes(2048, hd), codes(2048, hd), codes(hd, 2048)
    w_uk = torch.randn(nh, nope, kvr, device=dev, dtype=torch.bfloat16) * 0.05
    w_uv = torch.randn(nh, vd, kvr, device=dev, dtype=torch.bfloat16) * 0.05
    inv_freq = 1.0 / (10000 ** (torch.arange(0, rope, 2, device=dev).float() / rope))
    moe = make_moe()

    def lin(x, w):
        m = x.shape[0]
        mp = max(16, (m + 15) // 16 * 16)
        xp = torch.zeros(mp, x.shape[1], device=dev, dtype=torch.float32)
        xp[:m] = x.float()
        amax = xp.abs().amax(dim=1, keepdim=True).clamp(min=1e-12)
        ones = torch.full((1, w.shape[0]), 0.01, device=dev)
        return torch._scaled_mm((xp * (448.0 / amax)).to(torch.float8_e4m3fn), w.t(), scale_a=amax / 448.0,
                                scale_b=ones, out_dtype=torch.bfloat16)[:m]

    def rms(x):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6)).to(torch.bfloat16)

    def rotary(x, pos):  # x [..., 64], interleaved pairs
        ang = pos * inv_freq
        c, s = ang.cos(), ang.sin()
        x1, x2 = x.float()[..., 0::2], x.float()[..., 1::2]
        return torch.stack((x1 * c - x2 * s, x1 * s + x2 * c), dim=-1).flatten(-2).to(torch.bfloat16)

    def step(x, cache):  # x [B, H] float32 residual, cache [B, ctx + 1, 576] bf16
        B = x.shape[0]
        h = rms(x)
        q = lin(rms(lin(h, w_qa)), w_qb).view(B, nh, nope + rope)
        kv = lin(h, w_kva)
        cache[:, ctx, :kvr] = rms(kv[:, :kvr])
        cache[:, ctx, kvr:] = rotary(kv[:, kvr:], ctx)
        q_lat = torch.einsum("bhn,hnc->bhc", q[..., :nope], w_uk)           # [B, nh, 512]
        q_pe = rotary(q[..., nope:], ctx)                                    # [B, nh, 64]
        qf = torch.cat((q_lat, q_pe), dim=-1)                                # [B, nh, 576]
        scores = torch.bmm(qf, cache.transpose(1, 2)).float() * (nope + rope) ** -0.5
        p = torch.softmax(scores, dim=-1).to(torch.bfloat16)                 # [B, nh, ctx + 1]
        o_lat = torch.bmm(p, cache[..., :kvr])                               # [B, nh, 512]
        o = torch.einsum("bhc,hvc->bhv", o_lat, w_uv).reshape(B, nh * vd)
        x = x + lin(o, w_o).float()
        h2 = rms(x)
        routed, touched = moe(h2.float(), h2)
        shared = lin(torch.nn.functional.silu(lin(h2, w_sg)) * lin(h2, w_su), w_sd)
        return x + routed + shared.float(), touched

    for B in (1, 8, 64, 256):
        x = torch.randn(B, hd, device=dev)
        cache = torch.randn(B, ctx + 1, kvr + rope, device=dev, dtype=torch.bfloat16)
        touched = step(x, cache)[1]
        us = time_us(lambda: step(x, cache), reps=5 if B >= 64 else 20)
        print(f"torch full MoE layer decode batch={B:<4d} context={ctx} experts touched={touched:3d}: {us:9.1f} us")


def main():
    print("torch", torch.__version__, torch.cuda.get_device_name())
    if "--moe" in sys.argv:
        moe_layer_bench()
        return
    if "--layer" in sys.argv:
        full_layer_bench()
        return
    print("FP8: random e4m3 codes (as bench_gpu), scales 0.01; device time per product from CUDA-graph replays "
          "(20 products per graph, median of 10 replays), as bench_gpu times its own")
    for name, n, k in SHAPES:
        for m in (1, 8, 64, 256, 4096):
            mp = max(16, (m + 15) // 16 * 16)
            xp = fp8_codes(mp, k)
            w = fp8_codes(n, k)
            kinds = []
            kb, nb = (k + 127) // 128, (n + 127) // 128
            # DeepSeek's recipe (1x128 activation groups, 128x128 weight blocks) where this PyTorch and
            # cuBLAS have it, both scale tensors outer-dim-major; else row-wise scales.
            kinds.append(("scaled_mm block 1x128/128x128",
                          torch.full((kb, mp), 0.01, device="cuda").t(), torch.full((nb, kb), 0.01, device="cuda").t()))
            kinds.append(("scaled_mm rowwise", torch.full((mp, 1), 0.01, device="cuda"),
                          torch.full((1, n), 0.01, device="cuda")))
            us, kind, why = float("nan"), "scaled_mm unavailable", ""
            for label, sa, sb in kinds:
                try:
                    f = lambda sa=sa, sb=sb: torch._scaled_mm(xp, w.t(), scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16)
                    f()
                    torch.cuda.synchronize()
                    us, kind = graph_us(f), label + why
                    break
                except Exception as e:  # noqa: BLE001
                    why = f"; {label} unavailable: {type(e).__name__}: {(str(e).splitlines() or [''])[0][:80]}"
            xb = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            wb = torch.randn(n, k, device="cuda", dtype=torch.bfloat16)
            ub = graph_us(lambda: xb @ wb.t())
            fl = 2.0 * m * n * k
            print(f"torch {name:15s} M={m:<5d} N={n:<6d} K={k}: fp8 {us:9.1f} us ({fl / us / 1e6:7.1f} TFLOP/s, {kind}); "
                  f"bf16 {ub:9.1f} us ({fl / ub / 1e6:7.1f} TFLOP/s)")

if __name__ == "__main__":
    main()
