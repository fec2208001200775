"""How much the trained DiT uses its prompt: the flow-matching loss on clips the model did not
train on, with each clip's own caption, with the blank caption (the unconditional branch of
classifier-free guidance) and with another clip's caption, per noise level. A model that follows
its prompts has a clearly lower loss with the true caption than blank or wrong at high noise,
where colour, shape and motion are decided; equal losses mean the text is ignored. Then the
caption check (check.py) on the autoencoder's reconstructions of the same clips: what the DiT
can at best make the frames show.

    python textgain.py EXPORT STATE [--n 8] [--sigmas 0.3,0.6,0.8,0.95] [--threads 2]

EXPORT: a train.py export (its text encoder and DiT); STATE: a train.py state holding the same
autoencoder (its encoder makes the latents). Clips: data seed 977 (never a training seed here).
"""
import argparse
import json
import sys

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file

import check
import data
import model as M
import train


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("export")
    ap.add_argument("state")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--sigmas", default="0.3,0.6,0.8,0.95")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    with safe_open(a.export, "pt") as f:
        cfg = json.loads(f.metadata()["config"])
    vocab = cfg["vocab"]
    text, _, dit = M.load_exported(load_file(a.export), cfg, len(vocab))
    st = M.load_state(a.state, "textgain")
    ae = M.AutoEncoder(cfg["dit"]["in_channels"], cfg["ae"]["enc_dim"], cfg["ae"]["dec_dim"], cfg["ae"]["dec_mix"],
                       cfg["ae"]["dec_mlp"])
    ae.load_state_dict(st["ae"])
    ae.eval()
    V = cfg["video"]
    video, caps = data.batch(977, 0, a.n, V["width"], V["frames"])
    wrong = caps[1:] + caps[:1]
    g = torch.Generator().manual_seed(5)
    L = cfg["text"]["max_len"]
    with torch.no_grad():
        x0 = ae.encode(video)
        conds = {}
        for name, cs in (("true", caps), ("blank", [""] * a.n), ("wrong", wrong)):
            ids, valid = train.encode_captions(cs, vocab, L, "cpu")
            conds[name] = (*text(ids, valid), valid)
        print(f"{a.export}: flow loss on {a.n} unseen clips, per noise level s (x_s = (1-s) x0 + s e)")
        print("   s    true caption   blank   wrong caption   blank/true   wrong/true")
        for s in [float(x) for x in a.sigmas.split(",")]:
            e = torch.randn(x0.shape, generator=g)
            xs = (1 - s) * x0 + s * e
            t = torch.full((a.n,), 1000 * s)
            gd = torch.full((a.n,), 6.0)
            loss = {}
            for name, (states, pooled, valid) in conds.items():
                v = dit(xs, t, states, valid, pooled, gd)
                loss[name] = float(F.mse_loss(v, e - x0))
            print(f"{s:5.2f}   {loss['true']:12.4f}   {loss['blank']:7.4f}   {loss['wrong']:13.4f}"
                  f"   {loss['blank'] / loss['true']:10.3f}   {loss['wrong'] / loss['true']:10.3f}", flush=True)
        rec = ae.decoder(x0).clamp(-1, 1)
        orig = sum(check.score(c, v)["all"] for c, v in zip(caps, video))
        back = sum(check.score(c, v)["all"] for c, v in zip(caps, rec))
        print(f"autoencoder: the caption check (colour, shape, motion) reads {back} of {a.n} reconstructions right"
              f" ({orig} of {a.n} originals)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
