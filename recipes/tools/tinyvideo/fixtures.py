"""Writes the parity fixtures of spec/tiny_spec.lua from an exported model.

    python fixtures.py MODEL.safetensors OUT_DIR

OUT_DIR/tiny_model.safetensors is a copy of MODEL; OUT_DIR/tiny_io.safetensors holds the inputs
and PyTorch's outputs (f32), computed from the exported tensors read back (so the export path is
covered too): the text encoder on a prompt, the decoder on a latent, one DiT velocity.
"""
import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import data
import model as M

PROMPT = "a big red triangle moving left over a striped blue background as the camera pans up"


def main(argv):
    if len(argv) != 2:
        print(__doc__)
        return 2
    torch.set_num_threads(1)
    src, out = Path(argv[0]), Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    with safe_open(str(src), "pt") as f:
        meta = f.metadata()
    cfg = json.loads(meta["config"])
    vocab = cfg["vocab"]
    text, dec, dit = M.load_exported(load_file(str(src)), cfg, len(vocab))
    mc = cfg["dit"]
    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        ids = torch.tensor([data.word_ids(PROMPT, vocab)])
        n = ids.shape[1]
        L = mc["text_len"]
        pad = torch.zeros(1, L, dtype=torch.long)
        pad[0, :n] = ids[0]
        valid = torch.tensor([n])
        states, pooled = text(pad, valid)                           # [1, L, D] zero past n
        lat = torch.randn(1, mc["in_channels"], 2, 2, 3, generator=g)
        frames = dec(lat)[0].permute(1, 2, 3, 0).contiguous()       # [F, H, W, 3]
        x = torch.randn(1, mc["in_channels"], 2, 4, 6, generator=g)
        t = 640.0
        vel = dit(x, torch.tensor([t]), states, valid, pooled, torch.tensor([6.0]))
    io = {"text_states": states[0], "text_pooled": pooled, "dec_latent": lat[0], "dec_frames": frames,
          "dit_x": x[0], "dit_velocity": vel[0]}
    save_file({k: v.float().contiguous() for k, v in io.items()}, str(out / "tiny_io.safetensors"),
              metadata={"prompt": PROMPT, "dit_t": str(t), "dit_guidance": "6.0", "source": src.name})
    shutil.copyfile(src, out / "tiny_model.safetensors")
    print(f"wrote {out}/tiny_io.safetensors and tiny_model.safetensors; states {tuple(states.shape)} "
          f"frames {tuple(frames.shape)} velocity {tuple(vel.shape)} |v| {float(vel.norm()):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
