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

With --i2v it writes the image-to-video fixtures instead (the T2V files are left alone): the same
model with image conditioning (diffusers' I2V layout: image_dim, added_kv_proj_dim = the width, in
channels = latent + condition channels), 2 blocks, 2 heads of 12 channels (RoPE split 4/4/4),
4 latent channels plus 8 condition channels (4 mask channels, 1 on the first latent frame as
WanImageToVideoPipeline sets them, and 4 random "image latent" channels), freq_dim 32, text states
7 x 16 zero-padded to the 512 tokens diffusers' attention processor assumes (it takes the image
tokens as everything before the last 512), image states 5 x 16:

  wan_tiny_i2v.safetensors           the weights, diffusers' names
  wan_tiny_i2v_original.safetensors  the same under the original release's names (img_emb.proj.N,
                                     cross_attn.k_img / v_img / norm_k_img; checked against
                                     diffusers' converter)
  wan_tiny_i2v_io.safetensors        x [4, 3, 6, 10] (the noisy latent), image_latents [8, 3, 6, 10]
                                     (mask + latents), image_embeds [5, 16], t, cond [7, 16], uncond
                                     [7, 16] (before padding), v_cond, v_uncond and the CFG Euler
                                     step as above (both branches see the same image)

Needs torch, diffusers and safetensors:  python3 recipes/tools/wan_reference.py [--i2v] [OUT]
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

CONFIG_I2V = dict(CONFIG, attention_head_dim=12, in_channels=12, text_dim=16, freq_dim=32, ffn_dim=32,
                  image_dim=16, added_kv_proj_dim=24)   # the T2V config with these changed and added
IMAGE_LEN = 5
TEXT_PAD = 512           # diffusers' WanAttnProcessor: the last 512 tokens are the text
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
        "condition_embedder.image_embedder.norm1": "img_emb.proj.0",
        "condition_embedder.image_embedder.ff.net.0.proj": "img_emb.proj.1",
        "condition_embedder.image_embedder.ff.net.2": "img_emb.proj.3",
        "condition_embedder.image_embedder.norm2": "img_emb.proj.4",
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
        "attn2.add_k_proj": "cross_attn.k_img", "attn2.add_v_proj": "cross_attn.v_img",
        "attn2.norm_added_k": "cross_attn.norm_k_img",
    }
    istem, isuf = inner.rsplit(".", 1)
    return f"blocks.{idx}.{inner_map[istem]}.{isuf}"


def randomize(model, all_norms=False):
    """Random values for every parameter; norm weights around 1 (all_norms: every norm weight, else
    the ones the T2V fixture randomized, so its file stays byte-identical)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            is_norm = name.endswith("norm_q.weight") or name.endswith("norm_k.weight") or name.endswith("norm2.weight")
            if all_norms:
                is_norm = is_norm or (".norm" in name and name.endswith(".weight"))
            if is_norm:
                p.copy_(1 + 0.3 * torch.randn_like(p))            # norm weights around 1
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn_like(p))
            elif "scale_shift_table" in name:
                p.copy_(torch.randn_like(p) / p.shape[-1] ** 0.5)
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn_like(p) / fan_in ** 0.5)
    return {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}


def original_layout(sd):
    """sd under the original release's names, checked against diffusers' own converter."""
    orig = {to_original(k): v for k, v in sd.items()}
    assert len(orig) == len(sd)
    back = convert_wan_transformer_to_diffusers(dict(orig))
    assert sorted(back) == sorted(sd), (sorted(set(back) ^ set(sd)))
    for k in sd:
        assert torch.equal(back[k], sd[k]), k
    return orig


def main_i2v(out):
    torch.manual_seed(20251204)
    model = WanTransformer3DModel(**CONFIG_I2V).float().eval()
    sd = randomize(model, all_norms=True)
    orig = original_layout(sd)
    c = CONFIG_I2V
    lat_c = c["out_channels"]
    cond_c = c["in_channels"] - lat_c
    T, H, W = LATENT[1:]
    x = torch.randn(1, lat_c, T, H, W)
    # condition latents as WanImageToVideoPipeline lays them out: 4 mask channels (1 on the first
    # latent frame), then the image latents (here random on every frame)
    mask = torch.zeros(1, 4, T, H, W)
    mask[:, :, 0] = 1
    image_latents = torch.cat([mask, torch.randn(1, cond_c - 4, T, H, W)], dim=1)
    image_embeds = torch.randn(1, IMAGE_LEN, c["image_dim"])
    cond = torch.randn(1, TEXT_LEN, c["text_dim"])
    uncond = torch.randn(1, TEXT_LEN, c["text_dim"])

    def pad(s):  # the pipeline's zero padding of the text states to 512 tokens
        return torch.cat([s, s.new_zeros(1, TEXT_PAD - s.shape[1], s.shape[2])], dim=1)

    t = torch.tensor([1000.0 * SIGMA])
    inp = torch.cat([x, image_latents], dim=1)
    with torch.no_grad():
        v_c = model(inp, t, pad(cond), encoder_hidden_states_image=image_embeds, return_dict=False)[0]
        v_u = model(inp, t, pad(uncond), encoder_hidden_states_image=image_embeds, return_dict=False)[0]
        # the image branch matters: without it (the processor's image part zeroed) the output moves
        no_img = model(inp, t, pad(cond), encoder_hidden_states_image=0 * image_embeds, return_dict=False)[0]
    x_next = x + (SIGMA_NEXT - SIGMA) * (v_u + GUIDANCE * (v_c - v_u))

    cfg_json = {**c, "patch_size": list(c["patch_size"]), "image_len": IMAGE_LEN, "text_pad": TEXT_PAD}
    meta = {"config": json.dumps(cfg_json), "tool": "wan_reference.py --i2v"}
    save_file(sd, os.path.join(out, "wan_tiny_i2v.safetensors"), metadata=meta)
    save_file(orig, os.path.join(out, "wan_tiny_i2v_original.safetensors"), metadata=meta)
    io = {
        "x": x[0], "image_latents": image_latents[0], "image_embeds": image_embeds[0], "t": t, "cond": cond[0],
        "uncond": uncond[0], "v_cond": v_c[0], "v_uncond": v_u[0], "sigma": torch.tensor([SIGMA]),
        "sigma_next": torch.tensor([SIGMA_NEXT]), "guidance": torch.tensor([GUIDANCE]), "x_next": x_next[0],
    }
    save_file({k: v.contiguous() for k, v in io.items()}, os.path.join(out, "wan_tiny_i2v_io.safetensors"), metadata=meta)
    n = sum(v.numel() for v in sd.values())
    rel = ((v_c - no_img).norm() / v_c.norm()).item()
    print(f"wan_reference --i2v: {len(sd)} tensors, {n} parameters; |v_cond| rms {v_c.pow(2).mean().sqrt():.4f}, "
          f"|v_uncond| rms {v_u.pow(2).mean().sqrt():.4f}; zeroed image states move v_cond by {rel:.3f} (relative); "
          f"written to {os.path.abspath(out)}")


def main():
    args = sys.argv[1:]
    i2v = "--i2v" in args
    args = [a for a in args if a != "--i2v"]
    out = args[0] if args else os.path.join(os.path.dirname(__file__), "..", "..", "spec", "fixtures")
    os.makedirs(out, exist_ok=True)
    if i2v:
        return main_i2v(out)
    torch.manual_seed(20251203)
    model = WanTransformer3DModel(**CONFIG).float().eval()
    sd = randomize(model)
    orig = original_layout(sd)

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
