#!/usr/bin/python3
"""PyTorch peer for `pneumo bench model`: the same Keras ResNet50 v1 (stride on the first 1x1,
biased convs, BN eps 1.001e-5) plus pneumo's head, timed the same way (warm-up, median of N).
Run with Debian's /usr/bin/python3 (python3-torch). Prints grep-able lines:
  op=model impl=pytorch variant=eager|channels_last|jit_frozen|bf16_autocast mode=infer|train ...
  images_per_s=
bf16_autocast is channels_last under torch.autocast("cpu", dtype=torch.bfloat16) (oneDNN bf16
convolutions where the CPU has AVX512_BF16), the peer of `pneumo bench model --dtype bf16`.
"""
import argparse, statistics, time
import torch
import torch.nn as nn


class Block(nn.Module):
    def __init__(self, cin, f, stride, proj):
        super().__init__()
        bn = lambda c: nn.BatchNorm2d(c, eps=1.001e-5, momentum=0.01)
        self.c1, self.b1 = nn.Conv2d(cin, f, 1, stride), bn(f)
        self.c2, self.b2 = nn.Conv2d(f, f, 3, 1, 1), bn(f)
        self.c3, self.b3 = nn.Conv2d(f, 4 * f, 1), bn(4 * f)
        self.proj = nn.Sequential(nn.Conv2d(cin, 4 * f, 1, stride), bn(4 * f)) if proj else None

    def forward(self, x):
        y = torch.relu(self.b1(self.c1(x)))
        y = torch.relu(self.b2(self.c2(y)))
        y = self.b3(self.c3(y))
        return torch.relu(y + (self.proj(x) if self.proj is not None else x))


class ResNet50(nn.Module):
    def __init__(self, head1=256, head2=128, dropout=0.5):
        super().__init__()
        layers = [nn.ZeroPad2d(3), nn.Conv2d(3, 64, 7, 2), nn.BatchNorm2d(64, eps=1.001e-5),
                  nn.ReLU(), nn.ZeroPad2d(1), nn.MaxPool2d(3, 2)]
        cin = 64
        for st, (f, n) in enumerate([(64, 3), (128, 4), (256, 6), (512, 3)]):
            for b in range(n):
                layers.append(Block(cin, f, 2 if (b == 0 and st > 0) else 1, b == 0))
                cin = 4 * f
        self.backbone = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(2048, head1), nn.ReLU(), nn.Dropout(dropout),
                                  nn.Linear(head1, head2), nn.ReLU(), nn.Linear(head2, 1))

    def forward(self, x):
        return self.head(self.backbone(x).mean((2, 3)))


def timeit(fn, repeat, warmup):
    for _ in range(warmup):
        fn()
    t = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        t.append(time.perf_counter() - t0)
    return statistics.median(t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--train", choices=["none", "last20", "all"], default="none")
    ap.add_argument("--variants", default="eager,channels_last,jit_frozen")  # training skips jit_frozen
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    m = ResNet50()
    x = torch.rand(a.batch, 3, a.img_size, a.img_size)
    pre = f"op=model impl=pytorch-{torch.__version__} batch={a.batch} img={a.img_size} threads={a.threads}"
    if a.train == "none":
        m.eval()
        for v in a.variants.split(","):
            mm, xx = m, x
            if v == "channels_last":
                mm, xx = m.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
            if v == "jit_frozen":
                with torch.no_grad():
                    mm = torch.jit.freeze(torch.jit.trace(m, x).eval())
            if v == "bf16_autocast":
                mm, xx = m.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)

                def run(mm=mm, xx=xx):
                    with torch.autocast("cpu", dtype=torch.bfloat16):
                        return mm(xx)
            else:
                run = lambda mm=mm, xx=xx: mm(xx)
            with torch.no_grad():
                s = timeit(run, a.repeat, a.warmup)
            print(f"{pre} variant={v} mode=infer ms={s*1e3:.1f} images_per_s={a.batch/s:.2f}", flush=True)
    else:
        m.train()
        params = list(m.parameters())
        if a.train == "last20":
            # Keras's last 20 layers = the last two conv5 blocks; plus the head. Frozen BN in eval.
            for p in params:
                p.requires_grad_(False)
            trainable = list(m.backbone[-2:].modules()) + list(m.head.modules())
            for mod in m.backbone.modules():
                if isinstance(mod, nn.BatchNorm2d):
                    mod.eval()
            for mod in trainable:
                for p in mod.parameters(recurse=False):
                    p.requires_grad_(True)
                if isinstance(mod, nn.BatchNorm2d):
                    mod.train()
        opt = torch.optim.SGD([p for p in params if p.requires_grad], lr=0.01, momentum=0.9)
        y = torch.randint(0, 2, (a.batch, 1)).float()
        # Training variants: eager (NCHW), channels_last, and bf16_autocast (channels_last under
        # torch.autocast bf16: the peer of `pneumo bench model --train --dtype bf16`).
        for v in a.variants.split(","):
            if v == "jit_frozen":
                continue  # inference only
            mm, xx = m, x
            if v in ("channels_last", "bf16_autocast"):
                mm, xx = m.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)

            def step(mm=mm, xx=xx, v=v):
                opt.zero_grad()
                if v == "bf16_autocast":
                    with torch.autocast("cpu", dtype=torch.bfloat16):
                        z = mm(xx)
                    loss = nn.functional.binary_cross_entropy_with_logits(z.float(), y)
                else:
                    loss = nn.functional.binary_cross_entropy_with_logits(mm(xx), y)
                loss.backward()
                opt.step()
            s = timeit(step, a.repeat, a.warmup)
            print(f"{pre} variant={v} mode=train unfreeze={a.train} ms={s*1e3:.1f} images_per_s={a.batch/s:.2f}", flush=True)


if __name__ == "__main__":
    main()
