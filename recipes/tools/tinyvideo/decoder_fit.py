"""decoder_fit.py: a new decoder for an export, fitted to its frozen encoder (issue 14).

The committed export's decoder caps the caption check: real clips round-tripped through it read
43 of 50 held-out prompts, where the latents alone carry 47 or more (models/tiny/HISTORY.md, "The
autoencoder is the ceiling"). This tool keeps the encoder of a training STATE frozen, so the
latents the export's DiT was trained on stay what they are, and fits a fresh decoder of any size
to them on full training clips (or fine-tunes the state's own, given its size): L1 + MSE with
the shape's pixels weighted (the small shapes are the misses), noise on the latents as train.py's stage 1 (the decoder must tolerate the DiT's
errors). It writes EXPORT with its decoder replaced (adaspa reads the decoder's sizes from the
metadata; nothing else changes) and, with --out-state, the state with the new decoder, from which
`train.py --resume --init-from OUT` trains the DiT on.

    python decoder_fit.py --state STATE --export EXPORT --out OUT [--size 256,3,3] [--device cuda]
                          [--seconds 300 | --steps N] [--batch 16] [--out-state DEST] [--heldout 50]

STATE: a train.py state with the autoencoder (an --ae-only-state one will do; the first of its
.part.NN pieces is enough). Its decoder must be EXPORT's (the same latent space), checked.
At the end it prints the check's reading of the held-out prompts' clips round-tripped through the
frozen encoder and the new decoder (check.py selftest --heldout --ae DEST reads the same).
"""
import argparse
import json
import math
import shlex
import sys
import time

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import check
import data
import model as M
import train


def weighted_loss(rec, video, alpha, weight):
    """L1 + MSE of rec against video [B, 3, F, H, W], each pixel weighted 1 + (weight - 1) x the
    shape's coverage alpha [B, 1, F, H, W] (None: plain)."""
    d = rec.float() - video
    w = 1.0 if alpha is None else 1 + (weight - 1) * alpha
    return (d.abs() * w).mean() + (d.pow(2) * w).mean()


def decoder_tensors(dec):
    """The decoder's exported tensors (decoder.*, the latent statistics folded into lin_in)."""
    holder = torch.nn.Module()
    holder.decoder = dec
    return M.export_tensors(torch.nn.Module(), holder, torch.nn.Module())


def psnr(dec, z, clips):
    """PSNR (dB, pixels in [-1, 1]) of dec's frames from latents z against clips [B, 3, F, H, W]."""
    return float(-10 * torch.log10(F.mse_loss(dec(z).float().clamp(-1, 1), clips) / 4))


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--state", required=True, help="train.py state (or its .part.00) with the autoencoder")
    ap.add_argument("--export", required=True, help="the train.py export whose decoder is replaced")
    ap.add_argument("--out", required=True, help="the export with the new decoder (safetensors)")
    ap.add_argument("--out-state", default=None, help="also the state with the new decoder (torch file)")
    ap.add_argument("--size", default="256,3,3", help="DIM,MIX,MLP of the new decoder (the export's: 128,2,2); the"
                    " state's own size fine-tunes the state's decoder instead of starting fresh")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seconds", type=float, default=None, help="time budget (the cosine schedule follows it)")
    ap.add_argument("--steps", type=int, default=None, help="step budget (default 20000; both: the first reached)")
    ap.add_argument("--batch", type=int, default=16, help="clips a step")
    ap.add_argument("--lr", type=float, default=None, help="default 1e-3 (a fresh decoder), 3e-4 (fine-tuning)")
    ap.add_argument("--warmup", type=int, default=100, help="learning-rate warm-up steps")
    ap.add_argument("--object-weight", type=float, default=11.0, metavar="W",
                    help="the shape's pixels weigh W times the background's (1: plain)")
    ap.add_argument("--small-share", type=float, default=0.75, metavar="S",
                    help="about S of the clips are small shapes (data.train_params; [0.5, 1]; 0.5: the stream's own half)")
    ap.add_argument("--noise", type=float, default=0.05, help="latent noise, times the latents' std (train.py's)")
    ap.add_argument("--seed", type=int, default=0, help="init seed; the clips are data seed 7's")
    ap.add_argument("--heldout", type=int, default=50, help="held-out prompts read at the end (0: none)")
    ap.add_argument("--log-every", type=int, default=100)
    a = ap.parse_args(argv)
    try:
        dim, mix, mlp = (int(x) for x in a.size.split(","))
        if dim < 8 or dim % 8 or mix < 0 or mlp < 0:
            raise ValueError
    except ValueError:
        ap.error(f"--size {a.size}: DIM,MIX,MLP with DIM a multiple of 8 and MIX, MLP >= 0 (e.g. 256,3,3)")
    if not (a.object_weight >= 1 and math.isfinite(a.object_weight)):
        ap.error(f"--object-weight {a.object_weight}: must be a number >= 1")
    if not (0.5 <= a.small_share <= 1):
        ap.error(f"--small-share {a.small_share}: must be in [0.5, 1]")
    if a.seconds is None and a.steps is None:
        a.steps = 20000
    for name, v in (("--seconds", a.seconds), ("--steps", a.steps), ("--batch", a.batch)):
        if v is not None and not v > 0:
            ap.error(f"{name} {v}: must be > 0")
    try:   # EXPORT first, so that a bad file fails at once
        meta, tensors = train.read_export(a.export)
    except Exception as e:   # noqa: BLE001 - any unreadable file: one message, as train.py's
        ap.error(f"--export {a.export}: not a train.py export ({type(e).__name__}: {e})")
    cfg = json.loads(meta["config"])
    V = cfg["video"]
    dev = torch.device(a.device)
    amp = dev.type == "cuda"
    if amp:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(a.seed)
    st = check.read_state(a.state)
    ae = check.load_autoencoder(a.state, st)
    d0 = ae.decoder
    old = decoder_tensors(d0)
    bad = [k for k in old if k not in tensors or tensors[k].shape != old[k].shape
           or not torch.allclose(tensors[k].float(), old[k], rtol=1e-2, atol=1e-3)]
    if bad:
        ap.error(f"--state {a.state}: its decoder is not {a.export}'s (first differing tensor {bad[0]}): the encoder"
                 " would not make the latents that export's DiT was trained on")
    ae.encoder.to(dev).eval().requires_grad_(False)   # frozen; ae.decoder (d0) comes to dev below
    d = M.Decoder(d0.channels, dim, mix, mlp)
    tune = (dim, mix, mlp) == (d0.dim, len(d0.mix), len(d0.mlp))   # the state's size: fine-tune its decoder
    if tune:
        d.load_state_dict(d0.state_dict())
    else:
        d.lat_mean.copy_(d0.lat_mean)
        d.lat_std.copy_(d0.lat_std)
    lr = a.lr if a.lr is not None else (3e-4 if tune else 1e-3)
    d = d.to(dev)
    d0 = d0.to(dev).eval()

    def encode(video):
        """model-space latents of video, f32 (ae: the frozen encoder and the state's normalization)"""
        with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            return ae.encode(video).float()

    def clips(start, n):
        f = data.batch_fast if dev.type == "cuda" else data.batch
        v, _, al = f(7, start, n, V["width"], V["frames"], dev, alpha_out=True, small=a.small_share)
        return v, al
    n_par = sum(p.numel() for p in d.parameters())
    how = "the state's decoder, fine-tuned," if tune else "a fresh decoder"
    print(f"decoder_fit: {how} {dim},{mix},{mlp} ({n_par} parameters; the export's "
          f"{sum(p.numel() for p in d0.parameters())}) on the frozen encoder of {a.state}; {V['width']}x{V['width']}x"
          f"{V['frames']} clips, batch {a.batch}, object weight {a.object_weight}, small share {a.small_share},"
          f" learning rate {lr}, on {dev}", flush=True)
    val = clips(10 ** 9, 8)[0]   # clips no step draws
    zval = encode(val)
    with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
        p_old = psnr(d0, zval, val)
    opt = torch.optim.AdamW(d.parameters(), lr=lr, weight_decay=0.0)
    t0, step, clip, seen = time.time(), 0, 0, 0
    t_log, s_log = t0, 0
    while True:
        spent = time.time() - t0
        p = max(step / a.steps if a.steps else 0.0, spent / a.seconds if a.seconds else 0.0)
        if p >= 1:
            break
        video, alpha = clips(clip, a.batch)
        clip += a.batch
        z = encode(video)
        z = z + a.noise * z.std() * torch.randn_like(z)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            rec = d(z)
        loss = weighted_loss(rec, video, alpha if a.object_weight != 1 else None, a.object_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(d.parameters(), 1.0)
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (step + 1) / a.warmup) * 0.5 * (1 + math.cos(math.pi * p))
        opt.step()
        step += 1
        seen += a.batch
        if step % a.log_every == 0:
            now = time.time()
            print(f"step {step:6d}  loss {loss.item():.5f}  {now - t0:7.1f} s  ({100 * p:.1f}%)"
                  f"  {(step - s_log) * a.batch / max(now - t_log, 1e-9):.0f} clips/s", flush=True)
            t_log, s_log = now, step
    d.eval()
    with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
        p_new = psnr(d, zval, val)
        v_old = weighted_loss(d0(zval), val, None, 1).item()
        v_new = weighted_loss(d(zval), val, None, 1).item()
    secs = time.time() - t0
    print(f"done: {step} steps, {seen} clips, {secs:.1f} s; last loss {loss.item():.5f}; validation (8 clips)"
          f" PSNR {p_old:.2f} dB -> {p_new:.2f} dB, L1 + MSE {v_old:.5f} -> {v_new:.5f}", flush=True)
    d = d.float().cpu()
    info = {"command": "python decoder_fit.py " + " ".join(shlex.quote(x) for x in argv), "steps": step,
            "clips": seen, "seconds": round(secs, 1), "loss": loss.item(), "val_psnr_db": [round(p_old, 3), round(p_new, 3)],
            "size": [dim, mix, mlp]}
    prev = json.loads(meta.get("final_losses", "{}")).get("decoder_refit")
    if tune and isinstance(prev, dict):   # went on from the export's refit: its time counts (adaspa's report)
        info["before"] = prev.get("command", "") + ("; before it: " + prev["before"] if prev.get("before") else "")
        info["before_seconds"] = round(prev.get("seconds", 0) + prev.get("before_seconds", 0), 1)
    if a.out_state:   # the state with the new decoder: train.py --resume --init-from OUT goes on from it
        sd = {k: v for k, v in st.get("ae", st).items() if not k.startswith("decoder.")}
        sd.update(("decoder." + k, v) for k, v in d.state_dict().items())
        torch.save(dict(st, ae=sd, decoder_refit=info) if "ae" in st else {"ae": sd, "decoder_refit": info}, a.out_state)
        print(f"wrote {a.out_state}: {a.state} with the new decoder", flush=True)
    dt = tensors["decoder.lin_in.weight"].dtype
    t = {k: v for k, v in tensors.items() if not k.startswith("decoder.")}
    t.update((k, v.to(dt).contiguous()) for k, v in decoder_tensors(d).items())
    cfg["ae"].update(dec_dim=dim, dec_mix=mix, dec_mlp=mlp)
    losses = json.loads(meta.get("final_losses", "{}"))
    losses["decoder_refit"] = info
    meta = dict(meta, config=json.dumps(cfg), final_losses=json.dumps(losses), **train.flat_metadata(cfg))
    save_file(t, a.out, meta)
    print(f"wrote {a.out}: {a.export} with the new decoder ({dim},{mix},{mlp})", flush=True)
    if a.heldout > 0:   # f32 on the device (autocast off): clips from the CPU, frames back to it
        d_dev = d.to(dev)

        class RoundTrip:
            @staticmethod
            def encode(video):
                return ae.encode(video.to(dev))

            @staticmethod
            def decoder(z):
                return d_dev(z).cpu()
        with torch.autocast(dev.type, enabled=False):
            rates, misses, _, _ = check.selftest(a.heldout, V["width"], V["frames"], 0, True, RoundTrip)
        print(f"held-out clips ({a.heldout}) round-tripped with the new decoder: "
              + ", ".join(f"{k} {v:.2f}" for k, v in rates.items()), flush=True)
        for m in misses:
            print("  miss:", m)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
