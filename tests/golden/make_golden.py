#!/usr/bin/env python3
"""Makes the golden models and golden data for r1serve's tests.

Run on a machine with PyTorch, safetensors and transformers (the GPU machine has them):
    python3 tests/golden/make_golden.py --out tests/golden

For each model below it writes, in the checkpoint layout DeepSeek publishes:
  models/<name>-fp8/   config.json with quantization_config, linear weights as F8_E4M3 with
                       F32 weight_scale_inv in 128x128 blocks, the rest BF16 (bias F32)
  models/<name>-bf16/  the same values, every linear weight dequantised to BF16 (exact: an e4m3
                       value times a power-of-two scale fits BF16's 8-bit significand)
  data/<name>.safetensors  golden data from transformers' DeepseekV3ForCausalLM (float32, eager,
                       CPU), loaded from the BF16 folder:
      prompt.<i>.tokens  I32 [T]      random prompt ids
      prompt.<i>.logits  F32 [T, V]   logits at every position (whole-sequence prefill)
      greedy.prompt      I32 [P]
      greedy.tokens      I32 [32]     greedy argmax of transformers' logits, step by step
      greedy.margins     F32 [32]     top-1 minus top-2 logit at each generated step

The random values are chosen so both forms hold identical numbers: a float32 reference that reads
either form must agree with transformers to rounding error.
"""
import argparse
import json
import math
import os
import shutil

import torch
from safetensors.torch import save_file, load_file

BLOCK = 128
FP8_MAX = 448.0

MODELS = {
    # q_lora_rank set, YaRN, n_group > 1, norm_topk_prob on, one dense layer, an MTP layer in the
    # checkpoint (must be skipped), sharded with an index.
    "golden-a": dict(
        vocab_size=1024, hidden_size=192, intermediate_size=384, moe_intermediate_size=48,
        num_hidden_layers=3, first_k_dense_replace=1, num_attention_heads=4, num_key_value_heads=4,
        q_lora_rank=96, kv_lora_rank=160, qk_rope_head_dim=32, qk_nope_head_dim=64, v_head_dim=48,
        n_routed_experts=16, n_shared_experts=1, num_experts_per_tok=4, n_group=4, topk_group=2,
        norm_topk_prob=True, routed_scaling_factor=2.5, num_nextn_predict_layers=1,
        max_position_embeddings=2560, rope_theta=10000.0,
        rope_scaling=dict(type="yarn", factor=40.0, original_max_position_embeddings=64,
                          beta_fast=32, beta_slow=1, mscale=1.0, mscale_all_dim=1.0),
        shards=3, prompt_lengths=[1, 5, 37, 300]),
    # q_lora_rank null, no rope scaling, n_group 1, norm_topk_prob off, two dense layers,
    # two shared experts, odd head count, a single file.
    "golden-b": dict(
        vocab_size=1024, hidden_size=160, intermediate_size=320, moe_intermediate_size=64,
        num_hidden_layers=3, first_k_dense_replace=2, num_attention_heads=3, num_key_value_heads=3,
        q_lora_rank=None, kv_lora_rank=96, qk_rope_head_dim=16, qk_nope_head_dim=32, v_head_dim=32,
        n_routed_experts=8, n_shared_experts=2, num_experts_per_tok=2, n_group=1, topk_group=1,
        norm_topk_prob=False, routed_scaling_factor=1.5, num_nextn_predict_layers=0,
        max_position_embeddings=512, rope_theta=10000.0, rope_scaling=None,
        shards=1, prompt_lengths=[1, 9, 128, 260]),
}


def hf_config(spec):
    cfg = {k: v for k, v in spec.items() if k not in ("shards", "prompt_lengths")}
    cfg.update(
        architectures=["DeepseekV3ForCausalLM"], model_type="deepseek_v3", hidden_act="silu",
        rms_norm_eps=1e-6, initializer_range=0.02, attention_bias=False, attention_dropout=0.0,
        tie_word_embeddings=False, use_cache=True, bos_token_id=0, eos_token_id=1,
        moe_layer_freq=1, topk_method="noaux_tc", scoring_func="sigmoid", ep_size=1,
        torch_dtype="bfloat16")
    return cfg


def fp8_quantise(w):
    """w [N, K] float32 -> (e4m3 [N, K], scale_inv [ceil(N/128), ceil(K/128)] float32, exact deq)."""
    n, k = w.shape
    bn, bk = math.ceil(n / BLOCK), math.ceil(k / BLOCK)
    scale = torch.empty(bn, bk)
    q = torch.empty(n, k, dtype=torch.float8_e4m3fn)
    for i in range(bn):
        for j in range(bk):
            blk = w[i * BLOCK:(i + 1) * BLOCK, j * BLOCK:(j + 1) * BLOCK]
            amax = blk.abs().max().item()
            s = 2.0 ** math.ceil(math.log2(max(amax, 1e-30) / FP8_MAX))
            scale[i, j] = s
            q[i * BLOCK:(i + 1) * BLOCK, j * BLOCK:(j + 1) * BLOCK] = (blk / s).to(torch.float8_e4m3fn)
    deq = q.float() * scale.repeat_interleave(BLOCK, 0)[:n].repeat_interleave(BLOCK, 1)[:, :k]
    return q, scale, deq


# Gains of the layers that write into the residual stream (o_proj, down_proj) and of the router.
# Real models are residual-dominant (each sublayer adds a modest update), which keeps them well
# conditioned; with unit gains a random model is chaotic, and the small, legitimate differences
# of bf16 / FP8 arithmetic grow into large logit changes. See docs/design.md.
OUT_GAIN = 0.15
ROUTER_GAIN = 2.0


def make_weights(spec, gen):
    """Returns {name: (kind, tensors)}: kind 'linear' (FP8-able) or 'plain' (BF16 / F32)."""
    h = spec["hidden_size"]
    heads = spec["num_attention_heads"]
    nope, rope, vdim = spec["qk_nope_head_dim"], spec["qk_rope_head_dim"], spec["v_head_dim"]
    kvr, qr = spec["kv_lora_rank"], spec["q_lora_rank"]
    linear, plain, f32 = {}, {}, {}

    def randn(*shape, std=1.0):
        return torch.randn(*shape, generator=gen) * std

    def lin(name, n, k, gain=1.0):
        linear[name] = randn(n, k, std=gain / math.sqrt(k))

    def norm(name, n):
        plain[name] = 1.0 + randn(n, std=0.1)

    def mlp(prefix, inter):
        lin(prefix + "gate_proj.weight", inter, h)
        lin(prefix + "up_proj.weight", inter, h)
        lin(prefix + "down_proj.weight", h, inter, gain=OUT_GAIN)

    plain["model.embed_tokens.weight"] = randn(spec["vocab_size"], h)
    n_layers = spec["num_hidden_layers"] + spec["num_nextn_predict_layers"]
    for i in range(n_layers):
        p = f"model.layers.{i}."
        norm(p + "input_layernorm.weight", h)
        norm(p + "post_attention_layernorm.weight", h)
        a = p + "self_attn."
        if qr is None:
            lin(a + "q_proj.weight", heads * (nope + rope), h)
        else:
            lin(a + "q_a_proj.weight", qr, h)
            norm(a + "q_a_layernorm.weight", qr)
            lin(a + "q_b_proj.weight", heads * (nope + rope), qr)
        lin(a + "kv_a_proj_with_mqa.weight", kvr + rope, h)
        norm(a + "kv_a_layernorm.weight", kvr)
        lin(a + "kv_b_proj.weight", heads * (nope + vdim), kvr)
        lin(a + "o_proj.weight", h, heads * vdim, gain=OUT_GAIN)
        if i < spec["first_k_dense_replace"]:
            mlp(p + "mlp.", spec["intermediate_size"])
        else:
            e = spec["n_routed_experts"]
            plain[p + "mlp.gate.weight"] = randn(e, h, std=ROUTER_GAIN / math.sqrt(h))
            # Positive correction bias: the selection is then the same whether excluded groups are
            # masked with 0 (transformers) or -inf (DeepSeek's reference), as it is for R1.
            f32[p + "mlp.gate.e_score_correction_bias"] = torch.rand(e, generator=gen) * 0.2
            for x in range(e):
                mlp(p + f"mlp.experts.{x}.", spec["moe_intermediate_size"])
            mlp(p + "mlp.shared_experts.", spec["moe_intermediate_size"] * spec["n_shared_experts"])
        if i >= spec["num_hidden_layers"]:  # MTP layer extras, as published
            norm(p + "enorm.weight", h)
            norm(p + "hnorm.weight", h)
            lin(p + "eh_proj.weight", h, 2 * h)
            norm(p + "shared_head.norm.weight", h)
    norm("model.norm.weight", h)
    plain["lm_head.weight"] = randn(spec["vocab_size"], h, std=3.0 / math.sqrt(h))
    return linear, plain, f32


def write_checkpoint(folder, tensors, config, shards):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    names = sorted(tensors)
    if shards == 1:
        save_file({n: tensors[n].contiguous() for n in names}, os.path.join(folder, "model.safetensors"),
                  metadata={"format": "pt"})
        return
    per = math.ceil(len(names) / shards)
    weight_map, total = {}, 0
    for s in range(shards):
        fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = names[s * per:(s + 1) * per]
        save_file({n: tensors[n].contiguous() for n in part}, os.path.join(folder, fname),
                  metadata={"format": "pt"})
        for n in part:
            weight_map[n] = fname
            total += tensors[n].numel() * tensors[n].element_size()
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--only", default=None)
    ap.add_argument("--out-gain", type=float, default=None)
    ap.add_argument("--router-gain", type=float, default=None)
    args = ap.parse_args()
    global OUT_GAIN, ROUTER_GAIN
    if args.out_gain is not None:
        OUT_GAIN = args.out_gain
    if args.router_gain is not None:
        ROUTER_GAIN = args.router_gain

    import transformers
    from transformers import DeepseekV3ForCausalLM
    print("transformers", transformers.__version__, "torch", torch.__version__, flush=True)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.set_num_threads(max(1, os.cpu_count() or 1))

    for name, spec in MODELS.items():
        if args.only and name != args.only:
            continue
        gen = torch.Generator().manual_seed(1234 + len(name) * 7 + spec["hidden_size"])
        linear, plain, f32 = make_weights(spec, gen)
        fp8_tensors, bf16_tensors = {}, {}
        for n, w in linear.items():
            q, s, deq = fp8_quantise(w)
            fp8_tensors[n] = q
            fp8_tensors[n.replace(".weight", ".weight_scale_inv")] = s.float()
            bf16 = deq.to(torch.bfloat16)
            assert torch.equal(bf16.float(), deq), f"{n}: dequantised value not exact in bf16"
            bf16_tensors[n] = bf16
        for n, w in plain.items():
            fp8_tensors[n] = bf16_tensors[n] = w.to(torch.bfloat16)
        for n, w in f32.items():
            fp8_tensors[n] = bf16_tensors[n] = w.float()

        base = hf_config(spec)
        cfg_bf16 = dict(base)
        cfg_fp8 = dict(base)
        cfg_fp8["quantization_config"] = {"activation_scheme": "dynamic", "fmt": "e4m3",
                                          "quant_method": "fp8", "weight_block_size": [128, 128]}
        mdir = os.path.join(args.out, "models")
        d_bf16 = os.path.join(mdir, name + "-bf16")
        d_fp8 = os.path.join(mdir, name + "-fp8")
        for d in (d_bf16, d_fp8):
            shutil.rmtree(d, ignore_errors=True)
        write_checkpoint(d_bf16, bf16_tensors, cfg_bf16, spec["shards"])
        write_checkpoint(d_fp8, fp8_tensors, cfg_fp8, spec["shards"])

        model, info = DeepseekV3ForCausalLM.from_pretrained(
            d_bf16, dtype=torch.float32, attn_implementation="eager", output_loading_info=True)
        model.eval()
        mtp = f"model.layers.{spec['num_hidden_layers']}."
        unexpected = [k for k in info["unexpected_keys"] if not k.startswith(mtp)]
        assert not info["missing_keys"], f"missing: {info['missing_keys']}"
        assert not unexpected, f"unexpected: {unexpected}"
        assert not info.get("mismatched_keys"), f"mismatched: {info['mismatched_keys']}"
        print(name, "loaded; rope_interleave =", getattr(model.config, "rope_interleave", None),
              "scaling =", model.model.layers[0].self_attn.scaling,
              "attention_scaling =", model.model.rotary_emb.attention_scaling, flush=True)

        out = {}
        pgen = torch.Generator().manual_seed(99 + spec["hidden_size"])
        with torch.no_grad():
            for i, t in enumerate(spec["prompt_lengths"]):
                ids = torch.randint(0, spec["vocab_size"], (1, t), generator=pgen)
                logits = model(input_ids=ids, use_cache=False).logits[0].float()
                out[f"prompt.{i}.tokens"] = ids[0].to(torch.int32)
                out[f"prompt.{i}.logits"] = logits.contiguous()
                print(f"  prompt {i}: {t} tokens, logits std {logits.std().item():.3f}", flush=True)
                if i == 2:  # per-layer hidden states of one prompt, for locating a mismatch
                    hs = model(input_ids=ids, use_cache=False, output_hidden_states=True).hidden_states
                    out["debug.hidden"] = torch.stack([x[0].float() for x in hs]).contiguous()
            rot = model.model.rotary_emb
            out["debug.inv_freq"] = rot.inv_freq.float().contiguous()
            out["debug.attention_scaling"] = torch.tensor([float(rot.attention_scaling)])
            out["debug.softmax_scale"] = torch.tensor([float(model.model.layers[0].self_attn.scaling)])
            prompt = torch.randint(0, spec["vocab_size"], (1, 8), generator=pgen)
            # Greedy continuation, each step a whole-sequence forward (no sampling processors,
            # no EOS stop: the raw argmax of transformers' logits).
            seq, toks, margins = prompt, [], []
            for _ in range(32):
                step = model(input_ids=seq, use_cache=False).logits[0, -1].float()
                top2 = step.topk(2)
                toks.append(int(top2.indices[0]))
                margins.append((top2.values[0] - top2.values[1]).item())
                seq = torch.cat([seq, top2.indices[:1].view(1, 1)], dim=1)
            toks = torch.tensor(toks, dtype=torch.int32)
            out["greedy.prompt"] = prompt[0].to(torch.int32)
            out["greedy.tokens"] = toks.contiguous()
            out["greedy.margins"] = torch.tensor(margins, dtype=torch.float32)
            print(f"  greedy: {toks.tolist()}\n  min margin {min(margins):.4g}", flush=True)
        ddir = os.path.join(args.out, "data")
        os.makedirs(ddir, exist_ok=True)
        save_file(out, os.path.join(ddir, name + ".safetensors"),
                  metadata={"transformers": transformers.__version__, "torch": torch.__version__})
        # Round-trip check: the files read back equal what was written.
        back = load_file(os.path.join(ddir, name + ".safetensors"))
        assert all(torch.equal(back[k], v) for k, v in out.items())


if __name__ == "__main__":
    main()
