"""decoder_fit.py: the thirtieth session's CPU experiment (issue 14). A decoder fitted to a frozen
encoder's latents, on small-shape crops, then the check's ceiling with it. It shows that the
committed export's decoder, not its latents, loses the small shapes. It is an experiment, not part
of the training path: `train.py --refit-decoder` is the option still to build (models/tiny/HISTORY.md,
"The autoencoder is the ceiling").

    python decoder_fit.py STATE DIM MIX MLP MINUTES CLIPS OUT [EXPORT DEST]

STATE: a training state with the autoencoder (the first of its .part.NN pieces will do; the
encoder stays frozen). DIM MIX MLP: the new decoder's size (the state's own size fine-tunes its
decoder; another starts fresh). Two crops a clip of CLIPS small-shape training clips (256x256, 33
frames): a 5 x 12 x 12 latent window around the shape, the loss on its centre latent frame's inner
8 x 8 latent pixels (the 4 frames and 64 x 64 pixels they decode to), shape pixels weighted 11
times. Trains for MINUTES, saves the decoder's state_dict to OUT, and prints the check's reading
of the 50 held-out clips round-tripped through the frozen encoder and the new decoder. EXPORT
DEST: also writes EXPORT with its decoder replaced by the new one (sizes in its metadata) to DEST.
"""
import json
import random
import sys
import time

import torch
from safetensors.torch import save_file

import check
import data
import model as M
import train


def crops(ae, n, rng):
    """(latent window [16, 5, 12, 12], frames [3, 4, 64, 64], coverage [1, 4, 64, 64]) samples."""
    out = []
    for i in range(n):
        v, a = data.render(data.train_params(10_000_000 + i, small=1.0), 256, 33, alpha_out=True)
        with torch.no_grad():
            z = ae.encode(v[None])[0]                          # [16, 9, 32, 32], model space
        for t in rng.sample(range(2, 7), 2):                   # a centre latent frame with two on each side
            fr = slice(4 * t - 3, 4 * t + 1)                   # the 4 frames latent frame t decodes to
            ys, xs = torch.nonzero(a[0, fr].mean(0) > 0.2, as_tuple=True)
            if len(ys) == 0:
                continue
            y0 = min(max(int(ys.float().mean()) // 8 - 6, 0), 20)
            x0 = min(max(int(xs.float().mean()) // 8 - 6, 0), 20)
            py, px = slice(8 * (y0 + 2), 8 * (y0 + 10)), slice(8 * (x0 + 2), 8 * (x0 + 10))
            out.append((z[:, t - 2:t + 3, y0:y0 + 12, x0:x0 + 12].clone(), v[:, fr, py, px].clone(),
                        a[:, fr, py, px].clone()))
    return out


def decode_centre(d, z):
    """Decoder d on latent windows z [B, 16, 5, 12, 12]: the centre latent frame's inner 8 x 8
    latent pixels, [B, 3, 4, 64, 64] (the window holds the decoder's reach of 2 latent pixels a
    side). Latent frame 2 decodes to frames 8..11, 5..8 after the decoder drops the first 3."""
    return d(z)[:, :, 5:9, 16:80, 16:80]


def loss_of(d, samples):
    z, v, a = (torch.stack(s) for s in zip(*samples))
    r, w = decode_centre(d, z), 1 + 10 * a
    return ((r - v).abs() * w).mean() + ((r - v).pow(2) * w).mean()


def main(argv):
    if len(argv) not in (7, 9):
        raise SystemExit(__doc__)
    state, (dim, mix, mlp), minutes, n, out = argv[0], map(int, argv[1:4]), float(argv[4]), int(argv[5]), argv[6]
    export = None   # EXPORT, read before the fit so that a bad file fails at once
    if len(argv) == 9:
        try:
            export = train.read_export(argv[7])
        except Exception as e:   # noqa: BLE001 - any unreadable file: one message, as train.py's
            raise SystemExit(f"decoder_fit: EXPORT {argv[7]} is not a train.py export ({type(e).__name__}: {e})")
    torch.manual_seed(0)
    rng = random.Random(0)
    ae = check.load_autoencoder(state)
    d0 = ae.decoder
    if (dim, mix, mlp) == (d0.dim, len(d0.mix), len(d0.mlp)):
        d = M.Decoder(16, dim, mix, mlp)
        d.load_state_dict(d0.state_dict())
        how, lr = "the state's decoder, fine-tuned", 3e-4
    else:
        d = M.Decoder(16, dim, mix, mlp)
        d.lat_mean.copy_(d0.lat_mean)
        d.lat_std.copy_(d0.lat_std)
        how, lr = "fresh", 1e-3
    print(f"decoder: dim {dim}, mix {mix}, mlp {mlp} ({how}), {sum(p.numel() for p in d.parameters())} parameters", flush=True)
    t0 = time.time()
    s = crops(ae, n, rng)
    val, fit = s[::10], [x for i, x in enumerate(s) if i % 10]
    print(f"{len(s)} crops from {n} clips in {time.time() - t0:.0f} s", flush=True)
    if len(fit) < 2:
        raise SystemExit(f"decoder_fit: {len(s)} crops from {n} clips are too few (give CLIPS 5 or more)")
    with torch.no_grad():
        print(f"validation loss: the state's decoder {loss_of(d0, val).item():.4f}, this one {loss_of(d, val).item():.4f}", flush=True)
    opt = torch.optim.AdamW(d.parameters(), lr=lr, weight_decay=0.0)
    t0, step = time.time(), 0
    while time.time() - t0 < 60 * minutes:
        loss = loss_of(d, rng.sample(fit, min(16, len(fit))))
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % 100 == 0:
            with torch.no_grad():
                print(f"step {step}  {time.time() - t0:.0f} s  loss {loss.item():.4f}  validation {loss_of(d, val).item():.4f}", flush=True)
    torch.save(d.state_dict(), out)
    print(f"{step} steps; wrote {out}", flush=True)
    ae.decoder = d.eval()
    rates, misses, _, _ = check.selftest(50, 256, 33, 0, True, ae)
    print("held-out clips round-tripped with this decoder:", ", ".join(f"{k} {v:.2f}" for k, v in rates.items()))
    for m in misses:
        print("  miss:", m)
    if len(argv) == 9:
        meta, t = export
        dt = t["decoder.lin_in.weight"].dtype
        holder = torch.nn.Module()
        holder.decoder = d
        t = {k: v for k, v in t.items() if not k.startswith("decoder.")}
        t.update((k, v.to(dt).contiguous()) for k, v in M.export_tensors(torch.nn.Module(), holder, torch.nn.Module()).items())
        cfg = json.loads(meta["config"])
        cfg["ae"].update(dec_dim=dim, dec_mix=mix, dec_mlp=mlp)
        meta = dict(meta, config=json.dumps(cfg), **train.flat_metadata(cfg))
        save_file(t, argv[8], meta)
        print(f"wrote {argv[8]}: {argv[7]} with this decoder")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
