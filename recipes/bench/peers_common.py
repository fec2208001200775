"""What the PyTorch peer scripts of recipes/bench/ share: importing torch with a GPU, and the
median time of a callable by CUDA events."""


def torch_on_gpu(what):
    """Returns torch when it imports and sees a GPU; else prints 'NOTE <what> skipped: <why>' (the
    line the Lua benches show) and returns None."""
    try:
        import torch
    except Exception as e:  # noqa: BLE001
        print(f"NOTE {what} skipped: torch is not importable ({e})", flush=True)
        return None
    if not torch.cuda.is_available():
        print(f"NOTE {what} skipped: torch sees no GPU", flush=True)
        return None
    return torch


def median_ms(torch, fn, reps):
    """Runs fn once to warm up, then reps times between CUDA events (no autograd); returns the
    median in milliseconds."""
    with torch.no_grad():
        fn()
        torch.cuda.synchronize()
        ts = []
        for _ in range(reps):
            e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            e0.record()
            fn()
            e1.record()
            e1.synchronize()
            ts.append(e0.elapsed_time(e1))
    ts.sort()
    return ts[len(ts) // 2]
