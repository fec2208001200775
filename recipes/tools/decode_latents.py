#!/usr/bin/env python3
"""decode_latents.py: decode adaspa's latents.safetensors with the model's real VAE into PNG
frames and an mp4.

Runs in your PyTorch environment (torch, diffusers, safetensors, Pillow) with the model's weights
in the diffusers layout (a local folder or a Hugging Face id; only the VAE is loaded):

    python3 decode_latents.py --model hunyuan --weights hunyuanvideo-community/HunyuanVideo \\
        --latents out/hunyuan-.../latents.safetensors --out fox_video
    python3 decode_latents.py --model wan --weights Wan-AI/Wan2.1-T2V-1.3B-Diffusers \\
        --latents out/wan-.../latents.safetensors --out fox_video_wan

The latents are the tensor `latents` [16, T, H, W] an adaspa run writes (the sampler's final
latent in the model's space, as diffusers' pipelines hold it before decoding). They are decoded
as those pipelines do: HunyuanVideo: AutoencoderKLHunyuanVideo on latents / scaling_factor;
Wan2.1: AutoencoderKLWan on latents * latents_std + latents_mean (per channel, from the VAE's
config); then the pipelines' post-processing (x / 2 + 0.5 clamped to [0, 1], x 255 rounded).
T latent frames give 4 (T - 1) + 1 video frames of 8H x 8W pixels.

Writes OUT/frame_0000.png, ... and OUT/video.mp4 (H.264 through ffmpeg, found at /usr/bin/ffmpeg,
/usr/local/bin/ffmpeg or on PATH; else imageio when installed; else PNG frames only, saying so).
Options: --fps (HunyuanVideo 24, Wan 16), --device (cuda when available), --dtype of the VAE (f32
by default), --no-tiling (tiled decoding is on by default: a 720p video needs it), --no-mp4.
"""

import argparse
import os
import shutil
import subprocess
import sys

DEFAULT_FPS = {"hunyuan": 24, "wan": 16}
MAX_SIDE = 16384
MAX_FRAMES = 100000


def read_latents(path):
    """-> latents [16, T, H, W] float32 and the file's metadata; checks name, rank and sizes."""
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        keys = list(f.keys())
        if "latents" not in keys:
            raise SystemExit(f"decode_latents: {path}: no tensor 'latents' (it holds {', '.join(keys) or 'nothing'})")
        x = f.get_tensor("latents")
        meta = f.metadata() or {}
    if x.dim() != 4 or x.shape[0] != 16:
        raise SystemExit(f"decode_latents: {path}: latents has shape {list(x.shape)}, expected [16, T, H, W]")
    T, H, W = x.shape[1:]
    if not (1 <= T <= MAX_FRAMES // 4 and 1 <= H <= MAX_SIDE // 8 and 1 <= W <= MAX_SIDE // 8):
        raise SystemExit(f"decode_latents: {path}: latents of {T} frames x {H} x {W} are outside the sizes decoded here")
    if not x.is_floating_point():
        raise SystemExit(f"decode_latents: {path}: latents are {x.dtype}, not floating point")
    return x.float(), meta


def load_vae(model, weights, device, dtype):
    import diffusers

    cls = diffusers.AutoencoderKLHunyuanVideo if model == "hunyuan" else diffusers.AutoencoderKLWan
    return cls.from_pretrained(weights, subfolder="vae", torch_dtype=dtype).to(device).eval()


def to_vae_space(model, vae, latents):
    """adaspa's latents [16, T, H, W] -> the VAE's input [1, 16, T, H, W], as the pipelines do."""
    import torch

    z = latents.unsqueeze(0)
    if model == "hunyuan":
        return z / vae.config.scaling_factor
    c = vae.config.z_dim
    mean = torch.tensor(vae.config.latents_mean, dtype=torch.float32).view(1, c, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std, dtype=torch.float32).view(1, c, 1, 1, 1)
    return z * std + mean


def decode(model, vae, latents, device, dtype):
    """-> uint8 frames [F, H, W, 3] (numpy)."""
    import numpy as np
    import torch
    from diffusers.video_processor import VideoProcessor

    z = to_vae_space(model, vae, latents).to(device=device, dtype=dtype)
    with torch.no_grad():
        video = vae.decode(z, return_dict=False)[0]
    frames = VideoProcessor(vae_scale_factor=8).postprocess_video(video.float().cpu(), output_type="np")[0]
    return (frames * 255).round().astype(np.uint8)


def find_ffmpeg():
    for p in ("/usr/bin/ffmpeg", "/usr/local/bin/ffmpeg"):
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    return shutil.which("ffmpeg")


def write_mp4(frames, path, fps):
    """H.264 mp4 of uint8 frames [F, H, W, 3]; -> a line saying how, or None when nothing could."""
    F, H, W, _ = frames.shape
    ff = find_ffmpeg()
    if ff:
        cmd = [ff, "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
               "-video_size", f"{W}x{H}", "-framerate", str(fps), "-i", "pipe:0", "-an",
               "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", "-c:v", "libx264", "-preset", "medium", "-crf", "17",
               "-pix_fmt", "yuv420p", "-movflags", "+faststart", path]
        r = subprocess.run(cmd, input=frames.tobytes(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=3600)
        if r.returncode != 0:
            raise SystemExit(f"decode_latents: ffmpeg failed ({r.returncode}): {r.stderr.decode(errors='replace')[-2000:]}")
        return f"ffmpeg ({ff})"
    try:
        import imageio.v2 as imageio
    except ImportError:
        return None
    imageio.mimwrite(path, list(frames), fps=fps, macro_block_size=2)
    return "imageio"


def parse(argv):
    p = argparse.ArgumentParser(description="Decode adaspa's latents.safetensors with the model's VAE.")
    p.add_argument("--model", required=True, choices=["hunyuan", "wan"])
    p.add_argument("--weights", required=True, help="the model in the diffusers layout: a folder or a Hugging Face id")
    p.add_argument("--latents", required=True, help="latents.safetensors of an adaspa run")
    p.add_argument("--out", required=True, help="folder for frame_NNNN.png and video.mp4 (created)")
    p.add_argument("--fps", type=int, default=None, help="frame rate of the mp4 (hunyuan 24, wan 16)")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default="f32", choices=["f32", "bf16", "f16"], help="of the VAE")
    p.add_argument("--no-tiling", action="store_true", help="decode in one piece (tiling is on by default)")
    p.add_argument("--no-mp4", action="store_true", help="PNG frames only")
    a = p.parse_args(argv)
    if a.fps is not None and not 1 <= a.fps <= 240:
        p.error("--fps must be in 1..240")
    return a


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)
    import torch
    from PIL import Image

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}[args.dtype]
    latents, meta = read_latents(args.latents)
    vae = load_vae(args.model, args.weights, device, dtype)
    if not args.no_tiling and hasattr(vae, "enable_tiling"):
        vae.enable_tiling()
    frames = decode(args.model, vae, latents, device, dtype)
    os.makedirs(args.out, exist_ok=True)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(os.path.join(args.out, f"frame_{i:04d}.png"))
    F, H, W, _ = frames.shape
    print(f"decode_latents: {args.latents} (latents [{', '.join(str(s) for s in latents.shape)}]"
          f"{', ' + meta['model'] if 'model' in meta else ''}) -> {F} frames of {W}x{H} in {args.out}/frame_NNNN.png")
    if "weights" in meta and "synthetic" in meta["weights"].lower():
        print("  note: these latents come from synthetic weights: the video shows noise, not a picture")
    if not args.no_mp4:
        fps = args.fps or DEFAULT_FPS[args.model]
        path = os.path.join(args.out, "video.mp4")
        how = write_mp4(frames, path, fps)
        if how:
            print(f"  {path}: {F} frames at {fps} fps ({F / fps:.2f} s), by {how}")
        else:
            print("  no video.mp4: neither ffmpeg (Debian: apt-get install ffmpeg) nor imageio was found; PNG frames only")
    return 0


if __name__ == "__main__":
    sys.exit(main())
