"""Peer of recipes/bench/step.lua model=wan: diffusers' own WanTransformerBlock (Wan2.1 14B sizes by
default: dim 5120, 40 heads, FFN 13824, cross-attention to 512 text tokens), bf16 with random
weights, timed on the same GPU in the same run as adaspa's Wan step. A forward of the transformer
is composed as --layers blocks (the blocks are nearly all of it); a denoising step with
classifier-free guidance is two forwards.

diffusers is not on the GPU machine's image: carry its wheel (see kernels/testbed/NOTES.md, "Wan
peers"); without it this prints a NOTE and nothing else. Attention runs through PyTorch SDPA
(diffusers' default dispatch); the line says which SDPA backend took it.

Prints lines: PEER <key> <value> (block in ms, forward and step in s; median of --reps after a
warm-up) and NOTE lines for what could not run. --device cpu --tiny is a smoke test of this script.
"""
import argparse

from peers_common import median_ms, torch_on_gpu


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--grid", default="21,45,80", help="latent token grid t,h,w (720p, 81 frames: 75,600 tokens)")
    ap.add_argument("--dim", type=int, default=5120)
    ap.add_argument("--heads", type=int, default=40)
    ap.add_argument("--ffn", type=int, default=13824)
    ap.add_argument("--layers", type=int, default=40)
    ap.add_argument("--text", type=int, default=512)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="a small block for a smoke test")
    a = ap.parse_args()
    if a.tiny:
        a.grid, a.dim, a.heads, a.ffn, a.text, a.reps = "3,4,6", 96, 2, 192, 16, 1
    if a.device == "cuda":
        torch = torch_on_gpu("wan peers")
        if torch is None:
            return
    else:
        import torch
    try:
        from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed, WanTransformerBlock
    except Exception as e:  # noqa: BLE001
        print(f"NOTE wan peers skipped: diffusers' Wan transformer is not importable ({type(e).__name__}: {e})", flush=True)
        return
    dev = a.device
    dt = torch.bfloat16 if dev == "cuda" else torch.float32
    t, h, w = (int(v) for v in a.grid.split(","))
    S = t * h * w
    torch.manual_seed(1)
    block = WanTransformerBlock(a.dim, a.ffn, a.heads, qk_norm="rms_norm_across_heads", cross_attn_norm=True, eps=1e-6)
    block = block.to(device=dev, dtype=dt).eval()
    rope = WanRotaryPosEmbed(a.dim // a.heads, (1, 2, 2), 1024).to(dev)
    with torch.no_grad():
        # the rotary table of the token grid (the latent is twice the token grid in H and W)
        freqs = rope(torch.empty(1, 16, t, 2 * h, 2 * w, device=dev))
        x = torch.randn(1, S, a.dim, device=dev, dtype=dt)
        txt = torch.randn(1, a.text, a.dim, device=dev, dtype=dt)
        temb = torch.randn(1, 6, a.dim, device=dev, dtype=torch.float32) * 0.1

        def fn():
            return block(x, txt, temb, freqs)

        if dev == "cuda":
            ms = median_ms(torch, fn, a.reps)
        else:
            import time
            fn()
            t0 = time.perf_counter()
            y = fn()
            ms = (time.perf_counter() - t0) * 1e3
            assert torch.isfinite(y).all(), "the block's output is not finite"
    print(f"NOTE wan peers: diffusers WanTransformerBlock, {S} tokens, dim {a.dim}, {a.heads} heads, {a.text} text tokens, "
          f"{dt}, {dev}", flush=True)
    print(f"PEER wan_block {ms:.3f}", flush=True)
    print(f"PEER wan_forward {ms * a.layers / 1e3:.3f}", flush=True)
    print(f"PEER wan_step_cfg {2 * ms * a.layers / 1e3:.3f}", flush=True)


if __name__ == "__main__":
    main()
