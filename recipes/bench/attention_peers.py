"""Peers of recipes/bench/attention.lua, timed on the same GPU in the same run.

For each SHAPE (name:tokens): PyTorch SDPA with the cuDNN backend (dense), and, for the shapes
named by --flex (a name, or "all"), FlexAttention with 128x128 (flex_d) and 64x64 (flex64_d) block masks at each density: a
row-wise top-k of random mass with the text sink forced (text rows and columns kept), like the
Lua bench's layouts. q, k, v are views of one [S, 3, H, D] bf16 tensor, as in adaspa.
Prints one line per measurement: PEER <shape> <key> <ms> <TFLOP/s> (median of 5 after warm-up,
CUDA events; TFLOP/s over the computed blocks), and NOTE lines for what could not run.
"""
import argparse
import sys

from peers_common import median_ms, torch_on_gpu


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("shapes", nargs="+")
    ap.add_argument("--heads", type=int, default=24)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--text", type=int, default=256)
    ap.add_argument("--densities", default="0.1,0.2,0.4")
    ap.add_argument("--flex", default="")
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    torch = torch_on_gpu("peers")
    if torch is None:
        return
    import torch.nn.functional as F
    H, D = a.heads, a.dim

    def bench(fn):
        return median_ms(torch, fn, a.reps)

    for spec in a.shapes:
        name, S = spec.split(":")[0], int(spec.split(":")[1])
        qkv = torch.randn(S, 3, H, D, device="cuda", dtype=torch.bfloat16)
        q, k, v = (qkv[:, i].permute(1, 0, 2).unsqueeze(0) for i in range(3))  # [1, H, S, D] views
        dense = 4.0 * S * S * D * H
        try:
            from torch.nn.attention import SDPBackend, sdpa_kernel
            with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
                ms = bench(lambda: F.scaled_dot_product_attention(q, k, v))
            print(f"PEER {name} sdpa_cudnn {ms:.3f} {dense / ms / 1e9:.1f}", flush=True)
        except Exception as e:  # noqa: BLE001
            print(f"NOTE {name} cuDNN SDPA failed: {type(e).__name__}: {e}", flush=True)
        if a.flex != "all" and a.flex != name:
            continue
        try:
            from torch.nn.attention.flex_attention import BlockMask, flex_attention
            flex = torch.compile(flex_attention, dynamic=False)
            for B in (128, 64):
                nb = (S + B - 1) // B
                first_text = (S - a.text) // B
                for i, d in enumerate(float(x) for x in a.densities.split(",")):
                    g = torch.Generator(device="cuda").manual_seed(10 + i)
                    mass = torch.rand(H, nb, nb, device="cuda", generator=g)
                    mass[:, :, first_text:] = 2.0  # text columns first
                    keep_n = max(int(round(d * nb)), nb - first_text)
                    idx = torch.argsort(mass, dim=-1, descending=True)[..., :keep_n]
                    keep = torch.zeros(H, nb, nb, dtype=torch.bool, device="cuda")
                    keep.scatter_(-1, idx, True)
                    keep[:, first_text:, :] = True  # text rows keep everything
                    density = keep.float().mean().item()
                    counts = keep.sum(-1).to(torch.int32)
                    order = torch.argsort((~keep).to(torch.int8), dim=-1, stable=True).to(torch.int32)
                    zeros = torch.zeros_like(counts)
                    bm = BlockMask.from_kv_blocks(zeros[None], order[None], counts[None], order[None], BLOCK_SIZE=B,
                                                  seq_lengths=(S, S))
                    # Flex's default tiles are 128 x 64 (BLOCK_M x BLOCK_N): block masks of 64 need 64-row tiles
                    kopts = None if B == 128 else {"BLOCK_M": 64, "BLOCK_N": 64}
                    ms = bench(lambda: flex(q, k, v, block_mask=bm, kernel_options=kopts))
                    key = "flex" if B == 128 else "flex64"
                    print(f"PEER {name} {key}_{d:.1f} {ms:.3f} {dense * density / ms / 1e9:.1f} density {density:.3f}",
                          flush=True)
        except Exception as e:  # noqa: BLE001
            print(f"NOTE {name} FlexAttention failed: {type(e).__name__}: {str(e)[:300]}", flush=True)
        del qkv, q, k, v
        torch.cuda.empty_cache()


if __name__ == "__main__":
    sys.exit(main())
