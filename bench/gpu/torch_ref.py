#!/usr/bin/env python3
"""The reference run for bench_gpu, in PyTorch on the same GPU: FP8 GEMM through torch._scaled_mm
(row-wise scales: PyTorch's fastest FP8 path; block-wise where this PyTorch supports it) and BF16
GEMM through torch.matmul, at the same R1 shapes. Median of 20 timed runs after warm-up."""
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


def main():
    print("torch", torch.__version__, torch.cuda.get_device_name())
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
