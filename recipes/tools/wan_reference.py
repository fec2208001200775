#!/usr/bin/env python3
"""wan_reference.py: the parity fixtures of adaspa's Wan2.1 transformer (lua/adaspa/models/wan.lua).

Builds diffusers' own WanTransformer3DModel with a tiny configuration in float32 (2 blocks,
2 heads of 20 channels, so the 3D RoPE splits each head 8/6/6 over (T, H, W); 4 latent channels;
text states of 7 tokens x 24), gives every parameter random values (norm weights and biases
included, so none sits at its identity default), runs it on a random latent of an odd token grid
(3 x 3 x 5) and writes, under OUT (default spec/fixtures):

  wan_tiny.safetensors           the weights, diffusers' state-dict names
  wan_tiny_original.safetensors  the same weights under the original Wan release's names
                                 (checked here: diffusers' own converter maps them back exactly)
  wan_tiny_io.safetensors        inputs and reference outputs: x [4, 3, 6, 10], t, cond [7, 24],
                                 uncond [7, 24], v_cond, v_uncond (the velocities), and one full
                                 classifier-free-guidance Euler step: sigma, sigma_next,
                                 guidance, x_next = x + (sigma_next - sigma) * (v_u + g (v_c - v_u))

Needs torch, diffusers and safetensors:  python3 recipes/tools/wan_reference.py [OUT]
The config is stored in the io file's metadata (key "config", JSON).
"""

import json
import os
import sys

import torch
from diffusers import WanTransformer3DModel
from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers
from safetensors.torch import save_file

CONFIG = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=2,
    attention_head_dim=20,
    in_channels=4,
    out_channels=4,
    text_dim=24,
    freq_dim=256,
    ffn_dim=56,
    num_layers=2,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
)
LATENT = (4, 3, 6, 10)   # C, T, H, W -> token grid 3 x 3 x 5
TEXT_LEN = 7
SIGMA, SIGMA_NEXT, GUIDANCE = 0.8125, 0.6875, 5.0


def to_original(name):
    """A diffusers WanTransformer3DModel key -> the original Wan release's key."""
    top = {
        "condition_embedder.time_embedder.linear_1": "time_embedding.0",
        "condition_embedder.time_embedder.linear_2": "time_embedding.2",
        "condition_embedder.text_embedder.linear_1": "text_embedding.0",
        "condition_embedder.text_embedder.linear_2": "text_embedding.2",
        "condition_embedder.time_proj": "time_projection.1",
        "proj_out": "head.head",
        "patch_embedding": "patch_embedding",
    }
    if name == "scale_shift_table":
        return "head.modulation"
    stem, suffix = name.rsplit(".", 1)
    if stem in top:
        return top[stem] + "." + suffix
    parts = name.split(".")
    assert parts[0] == "blocks", name
    idx, inner = parts[1], ".".join(parts[2:])
    if inner == "scale_shift_table":
        return f"blocks.{idx}.modulation"
    inner_map = {
        "attn1.to_q": "self_attn.q", "attn1.to_k": "self_attn.k", "attn1.to_v": "self_attn.v",
        "attn1.to_out.0": "self_attn.o", "attn1.norm_q": "self_attn.norm_q", "attn1.norm_k": "self_attn.norm_k",
        "attn2.to_q": "cross_attn.q", "attn2.to_k": "cross_attn.k", "attn2.to_v": "cross_attn.v",
        "attn2.to_out.0": "cross_attn.o", "attn2.norm_q": "cross_attn.norm_q", "attn2.norm_k": "cross_attn.norm_k",
        "norm2": "norm3",
        "ffn.net.0.proj": "ffn.0", "ffn.net.2": "ffn.2",
    }
    istem, isuf = inner.rsplit(".", 1)
    return f"blocks.{idx}.{inner_map[istem]}.{isuf}"


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "..", "spec", "fixtures")
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(20251203)
    model = WanTransformer3DModel(**CONFIG).float().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm_q.weight") or name.endswith("norm_k.weight") or name.endswith("norm2.weight"):
                p.copy_(1 + 0.3 * torch.randn_like(p))            # norm weights around 1
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn_like(p))
            elif "scale_shift_table" in name:
                p.copy_(torch.randn_like(p) / p.shape[-1] ** 0.5)
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn_like(p) / fan_in ** 0.5)
    sd = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}

    # the original layout, checked against diffusers' own converter
    orig = {to_original(k): v for k, v in sd.items()}
    assert len(orig) == len(sd)
    back = convert_wan_transformer_to_diffusers(dict(orig))
    assert sorted(back) == sorted(sd), (sorted(set(back) ^ set(sd)))
    for k in sd:
        assert torch.equal(back[k], sd[k]), k

    x = torch.randn(1, *LATENT)
    cond = torch.randn(1, TEXT_LEN, CONFIG["text_dim"])
    uncond = torch.randn(1, TEXT_LEN, CONFIG["text_dim"])
    t = torch.tensor([1000.0 * SIGMA])
    with torch.no_grad():
        v_c = model(x, t, cond, return_dict=False)[0]
        v_u = model(x, t, uncond, return_dict=False)[0]
    x_next = x + (SIGMA_NEXT - SIGMA) * (v_u + GUIDANCE * (v_c - v_u))

    meta = {"config": json.dumps({**CONFIG, "patch_size": list(CONFIG["patch_size"])}), "tool": "wan_reference.py"}
    save_file(sd, os.path.join(out, "wan_tiny.safetensors"), metadata=meta)
    save_file(orig, os.path.join(out, "wan_tiny_original.safetensors"), metadata=meta)
    io = {
        "x": x[0], "t": t, "cond": cond[0], "uncond": uncond[0], "v_cond": v_c[0], "v_uncond": v_u[0],
        "sigma": torch.tensor([SIGMA]), "sigma_next": torch.tensor([SIGMA_NEXT]),
        "guidance": torch.tensor([GUIDANCE]), "x_next": x_next[0],
    }
    save_file({k: v.contiguous() for k, v in io.items()}, os.path.join(out, "wan_tiny_io.safetensors"), metadata=meta)
    n = sum(v.numel() for v in sd.values())
    print(f"wan_reference: {len(sd)} tensors, {n} parameters; |v_cond| rms {v_c.pow(2).mean().sqrt():.4f}, "
          f"|v_uncond| rms {v_u.pow(2).mean().sqrt():.4f}; written to {os.path.abspath(out)}")


if __name__ == "__main__":
    main()
